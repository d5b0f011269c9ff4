package redisbackend_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// muteProxy forwards TCP connections to a Redis server. mute makes the
// connections that have carried an SSUBSCRIBE so far fall silent both
// ways without closing them, as a connection does whose peer or network
// went away without a word: its client takes it for up until its
// keep-alive fails.
type muteProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	pairs []*mutePair
	wg    sync.WaitGroup
}

// mutePair is the state of one forwarded connection.
type mutePair struct {
	subscribed, muted atomic.Bool
}

// newMuteProxy starts a proxy to srv, stopped when the test ends.
func newMuteProxy(t *testing.T, srv *redistest.Server) *muteProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &muteProxy{ln: ln, target: srv.Addr()}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { closeProxy(p.ln, &p.mu, &p.conns, &p.wg) })
	return p
}

func (p *muteProxy) accept() {
	defer p.wg.Done()
	pairEach(p.ln, p.target, func(client, server net.Conn) {
		pair := &mutePair{}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.pairs = append(p.pairs, pair)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.forward(client, server, pair, true)
		go p.forward(server, client, pair, false)
	})
}

// forward copies from to to, dropping what comes once pair is muted;
// requests tells that from is the client.
func (p *muteProxy) forward(from, to net.Conn, pair *mutePair, requests bool) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && requests && bytes.Contains(buf[:n], []byte("SSUBSCRIBE")) {
			pair.subscribed.Store(true)
		}
		if n > 0 && !pair.muted.Load() {
			if _, werr := to.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			from.Close()
			to.Close()
			return
		}
	}
}

// mute silences the connections that have carried an SSUBSCRIBE, and
// returns how many.
func (p *muteProxy) mute() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pair := range p.pairs {
		if pair.subscribed.Load() {
			pair.muted.Store(true)
			n++
		}
	}
	return n
}

// hookReplacement has b replace its pub/sub connection once it holds
// more dead channels than one and than those watched, and call hook as
// each replacement begins or, with overlap, while the old and the new
// connection are both subscribed.
func hookReplacement(b *redisbackend.Backend, overlap bool, hook func()) {
	redisbackend.SetDeadChannels(b, 1, time.Hour)
	if overlap {
		redisbackend.SetHubHooks(b, hook, nil)
	} else {
		redisbackend.SetReplaceHook(b, hook)
	}
}

// watchTask creates task id of b with one event, subscribes to it, and
// returns that event, read from the backlog, and the subscription.
func watchTask(ctx context.Context, t *testing.T, b *redisbackend.Backend, id string) (progress.Event, <-chan progress.Event) {
	t.Helper()
	require.NoError(t, b.Create(ctx, id))
	_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
	require.NoError(t, err)
	watched, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	return collectN(t, watched, 1)[0], watched
}

// TestReplacementWhoseOldConnectionFails: the old connection of a
// replacement is killed, or falls silent, before the new one has
// subscribed the channels (a message published then reaches neither),
// or is killed while both are subscribed. The watcher of a task still
// gets every event once, in order, that message included, with no
// further message and no poll to tell it that it missed one: the hub has
// it read the event log when the old connection may have missed
// something.
func TestReplacementWhoseOldConnectionFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// overlap: the old connection fails while both are subscribed,
		// rather than as the replacement begins.
		overlap bool
		// mute: it falls silent rather than being killed.
		mute bool
	}{
		{name: "killed before the new connection subscribes"},
		{name: "killed while both connections are subscribed", overlap: true},
		{name: "silent before the new connection subscribes", mute: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eachProtocol(t, func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption) {
				p := newMuteProxy(t, srv)
				opt.InitAddress = []string{p.ln.Addr().String()}
				// No poll: only the hub can have the watcher read the log.
				b := newBackend(t, testClient(t, opt), redisbackend.Config{PollInterval: time.Hour, OpTimeout: 2 * time.Second})
				direct := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: b.Prefix()})
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				live := newTask().ID
				const missed = "published while the old connection fails"

				var oldID string // set before the replacement
				var failed atomic.Bool
				fail := func() {
					if !failed.CompareAndSwap(false, true) {
						return
					}
					if tc.mute {
						assert.Equal(t, 1, p.mute(), "connections muted")
					} else {
						assert.NoError(t, srv.Do("CLIENT", "KILL", "ID", oldID).Error())
					}
					_, err := direct.Append(ctx, live, progress.LogEvent(missed))
					assert.NoError(t, err)
				}
				hookReplacement(b, tc.overlap, fail)

				first, watched := watchTask(ctx, t, b, live)
				leaveTask(ctx, t, b)
				subs := subscribedClients(t, srv)
				require.Len(t, subs, 1)
				oldID = subs[0]["id"]
				leaveTask(ctx, t, b) // two dead channels, one watched: replaced
				eventually(t, failed.Load, "the connection is replaced")

				got := collectN(t, watched, 1)
				assert.Equal(t, missed, got[0].Step.Message, "the event published while the old connection failed")
				eventually(t, func() bool {
					for _, cl := range clients(t, srv) {
						if cl["id"] == oldID {
							return false
						}
					}
					return true
				}, "the old connection is closed")
				finishAfter(ctx, t, b, live, watched, first, got[0])
			})
		})
	}
}

// taskOn returns the id of a new task whose slot the master at addr
// serves, other than the slots in not.
func taskOn(t *testing.T, c *redistest.Cluster, addr string, not ...int) string {
	t.Helper()
	for {
		id := newTask().ID
		if slotOwner(t, c, id).Addr != addr {
			continue
		}
		slot, err := c.SlotOf(id)
		require.NoError(t, err)
		clash := false
		for _, s := range not {
			clash = clash || s == slot
		}
		if !clash {
			return id
		}
	}
}

// TestClusterSlotMovesDuringReplacement moves the slot of a watched task
// to another master while the connection of its master's link is being
// replaced: as the replacement begins (Redis ends the channel's
// subscription on the old connection, and the new one's SSUBSCRIBE gets
// MOVED), or while the old and the new connection are both subscribed
// (Redis ends it on both), or once the old connection was killed as the
// replacement begins (Redis has no subscription to end: the new
// connection's SSUBSCRIBE gets MOVED). An event appended right after the
// move reaches the watcher, and the watcher gets every event once, in
// order.
func TestClusterSlotMovesDuringReplacement(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	for _, tc := range []struct {
		name          string
		overlap, kill bool
	}{
		{name: "as the replacement begins"},
		{name: "while both connections are subscribed", overlap: true},
		{name: "once the old connection is killed", kill: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, newClusterClient(t, c), redisbackend.Config{PollInterval: time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
			defer cancel()
			masters, err := c.Masters()
			require.NoError(t, err)
			from := masters[0]
			to := otherMasters(t, c, from)[0]
			live := taskOn(t, c, from.Addr)
			liveSlot, err := c.SlotOf(live)
			require.NoError(t, err)
			const afterMove = "appended after the move"

			var oldID string // set before the replacement
			var moving, moved atomic.Bool
			move := func() {
				if !moving.CompareAndSwap(false, true) {
					return
				}
				defer moved.Store(true)
				if tc.kill {
					_, err := redisproc.Do(from.Addr, "CLIENT", "KILL", "ID", oldID)
					assert.NoError(t, err)
				}
				assert.NoError(t, c.MoveSlot(liveSlot, to.ID, func() {}))
				_, err := b.Append(ctx, live, progress.LogEvent(afterMove))
				assert.NoError(t, err)
			}
			hookReplacement(b, tc.overlap, move)

			first, watched := watchTask(ctx, t, b, live)
			// Two dead channels on the live task's master, one watched:
			// that master's connection alone is replaced.
			leaveTaskID(ctx, t, b, taskOn(t, c, from.Addr, liveSlot))
			for _, cl := range nodeClients(t, from.Addr) {
				if cl["ssub"] != "0" {
					require.Empty(t, oldID, "one subscribed connection to the master")
					oldID = cl["id"]
				}
			}
			leaveTaskID(ctx, t, b, taskOn(t, c, from.Addr, liveSlot))
			eventually(t, moved.Load, "the connection is replaced")

			got := collectN(t, watched, 1)
			assert.Equal(t, afterMove, got[0].Step.Message)
			assert.Equal(t, to.ID, slotOwner(t, c, live).ID, "the task's slot moved")
			finishAfter(ctx, t, b, live, watched, first, got[0])
			eventually(t, func() bool {
				n := 0
				for _, cl := range nodeClients(t, from.Addr) {
					if cl["ssub"] != "0" {
						n++
					}
				}
				return n <= 1
			}, "one subscribed connection to the old master")
		})
	}
}

// TestReplacementWhileAWatcherJoinsAgain: a watcher joins again a
// channel that the old connection holds dead, as a replacement begins
// (the new connection subscribes it with the others) or while both
// connections are subscribed (the new connection subscribes it once the
// old one is closed), and an event is appended to its task then. The
// watcher gets the task's backlog, that event and the later ones, each
// once, in order.
func TestReplacementWhileAWatcherJoinsAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		overlap bool
	}{
		{name: "as the replacement begins"},
		{name: "while both connections are subscribed", overlap: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			b := newBackend(t, newClient(t, srv), redisbackend.Config{PollInterval: time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			const during = "appended as the watcher joins again"

			var again string // the task whose channel is dead, set before the replacement
			var joining, joined atomic.Bool
			var rejoined <-chan progress.Event
			join := func() {
				if !joining.CompareAndSwap(false, true) {
					return
				}
				defer joined.Store(true)
				var err error
				rejoined, err = b.Subscribe(ctx, again, "")
				assert.NoError(t, err)
				_, err = b.Append(ctx, again, progress.LogEvent(during))
				assert.NoError(t, err)
			}
			hookReplacement(b, tc.overlap, join)

			watchTask(ctx, t, b, newTask().ID)
			again = leaveTask(ctx, t, b)
			leaveTask(ctx, t, b) // two dead channels, one watched: replaced
			eventually(t, joined.Load, "the connection is replaced")
			require.NotNil(t, rejoined)

			got := collectN(t, rejoined, 2)
			assert.Equal(t, during, got[1].Step.Message)
			_, err := b.Append(ctx, again, progress.LogEvent("after the replacement"))
			require.NoError(t, err)
			got = append(got, collectN(t, rejoined, 1)...)
			assert.Equal(t, "after the replacement", got[2].Step.Message, "a live event after the replacement")
			finishAfter(ctx, t, b, again, rejoined, got...)
		})
	}
}
