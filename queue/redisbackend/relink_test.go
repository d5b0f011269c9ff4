package redisbackend_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// eachProtocol runs test in parallel subtests, RESP3 and RESP2, each on
// a Redis of its own, with a client option that speaks the protocol.
func eachProtocol(t *testing.T, test func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption)) {
	t.Helper()
	for _, resp2 := range []bool{false, true} {
		name := "RESP3"
		if resp2 {
			name = "RESP2"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			opt := srv.ClientOption()
			opt.AlwaysRESP2 = resp2
			test(t, srv, opt)
		})
	}
}

// leaveTask subscribes to a new task of b and leaves once the backlog is
// in, which leaves its channel dead on the hub's connection.
func leaveTask(ctx context.Context, t *testing.T, b *redisbackend.Backend) string {
	t.Helper()
	id := newTask().ID
	leaveTaskID(ctx, t, b, id)
	return id
}

// leaveTaskID is leaveTask for a task of b with the id given.
func leaveTaskID(ctx context.Context, t *testing.T, b *redisbackend.Backend, id string) {
	t.Helper()
	require.NoError(t, b.Create(ctx, id))
	_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
	require.NoError(t, err)
	sub, leave := context.WithCancel(ctx)
	ch, err := b.Subscribe(sub, id, "")
	require.NoError(t, err)
	require.Len(t, collectN(t, ch, 1), 1)
	leave()
	collect(t, ch)
}

// finishWatched ends task id and checks that watched, which had first
// from its backlog, delivered every event of the task once, in order.
func finishWatched(ctx context.Context, t *testing.T, b *redisbackend.Backend, id string, first progress.Event, watched <-chan progress.Event) {
	t.Helper()
	finishAfter(ctx, t, b, id, watched, first)
}

// finishAfter ends task id and checks that watched, which delivered got
// so far, delivered every event of the task once, in order.
func finishAfter(ctx context.Context, t *testing.T, b *redisbackend.Backend, id string, watched <-chan progress.Event, got ...progress.Event) {
	t.Helper()
	_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: []byte(`"ok"`)})
	require.NoError(t, err)
	rest, err := drain(watched)
	require.NoError(t, err)
	want, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Equal(t, ids(want), ids(append(got, rest...)),
		"task %s: every event once, in order", id)
}

// TestReplacedConnectionLosesNothing: once the channels whose watchers
// left pile up past the limit, the hub's connection is replaced by one
// that holds only the channels watched. A watcher that stays receives
// every event once, those published while both connections are
// subscribed (which reach the hub twice) included, without reading the
// event log again; the old connection is closed.
func TestReplacedConnectionLosesNothing(t *testing.T) {
	t.Parallel()
	eachProtocol(t, func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption) {
		const limit, rounds = 2, 3
		// No poll: only live messages can deliver the events.
		b := newBackend(t, testClient(t, opt), redisbackend.Config{PollInterval: time.Hour})
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		live := newTask().ID
		liveChannel := b.Prefix() + ":{" + live + "}:live"
		var overlaps, bothSubscribed, resyncs atomic.Int32
		redisbackend.SetDeadChannels(b, limit, time.Hour)
		redisbackend.SetHubHooks(b, func() {
			n := overlaps.Add(1)
			_, err := b.Append(ctx, live, progress.LogEvent(fmt.Sprintf("overlap %d", n)))
			assert.NoError(t, err)
			subs, err := srv.Do("PUBSUB", "SHARDNUMSUB", liveChannel).ToArray()
			if assert.NoError(t, err) && assert.Len(t, subs, 2) {
				if n, _ := subs[1].AsInt64(); n == 2 {
					bothSubscribed.Add(1)
				}
			}
		}, func(channel string) {
			if channel == liveChannel {
				resyncs.Add(1)
			}
		})

		require.NoError(t, b.Create(ctx, live))
		_, err := b.Append(ctx, live, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
		watched, err := b.Subscribe(ctx, live, "")
		require.NoError(t, err)
		first := collectN(t, watched, 1)[0]
		before := len(clients(t, srv))

		for round := range rounds {
			// One dead channel more than the limit (the live channel
			// is the only one assigned) calls for a replacement.
			for range limit + 1 {
				leaveTask(ctx, t, b)
			}
			eventually(t, func() bool { return overlaps.Load() == int32(round+1) }, "the connection is replaced")
			_, err := b.Append(ctx, live, progress.LogEvent(fmt.Sprintf("round %d", round)))
			require.NoError(t, err)
		}
		eventually(t, func() bool {
			subs := subscribedClients(t, srv)
			return len(subs) == 1 && subs[0]["ssub"] == "1" && len(clients(t, srv)) == before
		}, "one connection, with the watched channel only")

		finishWatched(ctx, t, b, live, first, watched)
		assert.Equal(t, int32(rounds), overlaps.Load(), "replacements")
		assert.Equal(t, int32(rounds), bothSubscribed.Load(), "messages published in the overlap came on both connections")
		assert.Zero(t, resyncs.Load(), "the watcher never read the event log again")
	})
}

// TestDeadChannelsStayUntilTheirAge: channels whose watchers left stay
// subscribed on the same connection while they are fewer than the limit
// and younger than the age; one joined again meanwhile is confirmed at
// once and delivers. Once they have been dead for the age, the
// connection is replaced by one without them.
func TestDeadChannelsStayUntilTheirAge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		age  time.Duration
	}{{"young", time.Hour}, {"old", 50 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			b := newBackend(t, newClient(t, srv), redisbackend.Config{PollInterval: time.Hour})
			var overlaps atomic.Int32
			redisbackend.SetDeadChannels(b, 1000, tc.age)
			redisbackend.SetHubHooks(b, func() { overlaps.Add(1) }, nil)
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()

			again := leaveTask(ctx, t, b)
			leaveTask(ctx, t, b)
			if tc.age != time.Hour {
				eventually(t, func() bool { return len(subscribedClients(t, srv)) == 0 },
					"no channel subscribed once the dead ones are old")
				assert.Positive(t, overlaps.Load(), "the connection was replaced")
				return
			}
			subs := subscribedClients(t, srv)
			require.Len(t, subs, 1)
			assert.Equal(t, "2", subs[0]["ssub"], "both channels stay subscribed")
			sub, leave := context.WithCancel(ctx)
			defer leave()
			watched, err := b.Subscribe(sub, again, "")
			require.NoError(t, err)
			collectN(t, watched, 1) // the backlog
			_, err = b.Append(ctx, again, progress.LogEvent("back"))
			require.NoError(t, err)
			assert.Equal(t, "back", collectN(t, watched, 1)[0].Step.Message)
			after := subscribedClients(t, srv)
			require.Len(t, after, 1)
			assert.Equal(t, subs[0]["id"], after[0]["id"], "the same connection")
			assert.Equal(t, "2", after[0]["ssub"])
			assert.Zero(t, overlaps.Load(), "no replacement")
		})
	}
}

// TestClusterReplacedConnectionsLoseNothing is TestReplacedConnectionLosesNothing
// on a Redis Cluster: each master's connection is replaced on its own.
func TestClusterReplacedConnectionsLoseNothing(t *testing.T) {
	t.Parallel()
	const limit, dead = 1, 30
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	defer cancel()
	masters, err := c.Masters()
	require.NoError(t, err)

	// A watched task on each master.
	live := map[string]string{} // master address: task id
	for len(live) < len(masters) {
		id := newTask().ID
		if addr := slotOwner(t, c, id).Addr; live[addr] == "" {
			live[addr] = id
		}
	}
	liveChannels := map[string]bool{}
	for _, id := range live {
		liveChannels[b.Prefix()+":{"+id+"}:live"] = true
	}
	var overlaps, resyncs atomic.Int32
	var mu sync.Mutex
	finishing := false // the watched tasks end: appends in the overlaps stop
	redisbackend.SetDeadChannels(b, limit, time.Hour)
	redisbackend.SetHubHooks(b, func() {
		n := overlaps.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if finishing {
			return
		}
		for _, id := range live {
			_, err := b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("overlap %d", n)))
			assert.NoError(t, err)
		}
	}, func(channel string) {
		if liveChannels[channel] {
			resyncs.Add(1)
		}
	})
	firsts := map[string]progress.Event{}
	watched := map[string]<-chan progress.Event{}
	for _, id := range live {
		require.NoError(t, b.Create(ctx, id))
		_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
		watched[id], err = b.Subscribe(ctx, id, "")
		require.NoError(t, err)
		firsts[id] = collectN(t, watched[id], 1)[0]
	}

	for i := range dead {
		leaveTask(ctx, t, b)
		if i%5 == 4 {
			for _, id := range live {
				_, err := b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("after %d", i)))
				require.NoError(t, err)
			}
		}
	}
	eventually(t, func() bool {
		subs := shardSubscribers(t, c)
		if len(subs) != len(masters) {
			return false
		}
		for _, conns := range subs {
			if len(conns) != 1 || conns[0] > limit+1 {
				return false
			}
		}
		return true
	}, "one connection per master, with its watched channel and at most the limit of dead ones")
	assert.GreaterOrEqual(t, overlaps.Load(), int32(len(masters)), "each master's connection was replaced")

	mu.Lock()
	finishing = true
	mu.Unlock()
	for _, id := range live {
		finishWatched(ctx, t, b, id, firsts[id], watched[id])
	}
	assert.Zero(t, resyncs.Load(), "no watcher read the event log again")
	for _, m := range masters {
		n := 0
		for _, cl := range nodeClients(t, m.Addr) {
			if cl["ssub"] != "0" {
				n++
			}
		}
		assert.LessOrEqual(t, n, 1, "subscribed connections to master %s", m.Addr)
	}
}
