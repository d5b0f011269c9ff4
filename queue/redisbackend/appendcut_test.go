package redisbackend_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// cutProxy forwards TCP connections to a Redis server, and cuts the
// connection that carries a request with a marker after Redis has
// answered it and before the answer reaches the client: the client's
// command ran, and its client cannot know it.
type cutProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	marker []byte // "" when disarmed
	// ran, if set, tells whether Redis has run the marked request (see
	// armUntil).
	ran   func() bool
	conns []net.Conn
	wg    sync.WaitGroup
	cuts  atomic.Int32
}

// newCutProxy starts a proxy to srv, stopped when the test ends.
func newCutProxy(t *testing.T, srv *redistest.Server) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: srv.Addr()}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// arm makes the proxy cut the next connection whose requests carry
// marker, once.
func (p *cutProxy) arm(marker string) { p.armUntil(marker, nil) }

// armUntil is arm for a connection that carries other requests too: once
// the marked request is sent, the proxy cuts the connection at the first
// answer that Redis sends once ran reports that it has run the marked
// request, rather than at the first answer, which may be that of an
// earlier request (or a NOSCRIPT, which the client follows with the
// script itself); the answers before go through.
func (p *cutProxy) armUntil(marker string, ran func() bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker = []byte(marker)
	p.ran = ran
}

// hasRun reports whether the marked request may be taken to have run.
func (p *cutProxy) hasRun() bool {
	p.mu.Lock()
	ran := p.ran
	p.mu.Unlock()
	return ran == nil || ran()
}

// takeMarker reports whether chunk, the bytes after tail, holds the
// armed marker, and disarms the proxy if so.
func (p *cutProxy) takeMarker(tail, chunk []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.marker) == 0 || !bytes.Contains(append(tail, chunk...), p.marker) {
		return false
	}
	p.marker = nil
	return true
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	pairEach(p.ln, p.target, func(client, server net.Conn) {
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		var cut atomic.Bool
		p.wg.Add(2)
		go p.requests(client, server, &cut)
		go p.replies(server, client, &cut)
	})
}

// pairEach accepts connections on ln until it is closed, dials target
// for each and hands serve the pair; a pair whose dial fails is dropped.
func pairEach(ln net.Listener, target string, serve func(client, server net.Conn)) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", target)
		if err != nil {
			client.Close()
			continue
		}
		serve(client, server)
	}
}

// requests forwards what client sends to server; once a request with the
// marker is seen, cut is set before that request goes on.
func (p *cutProxy) requests(client, server net.Conn, cut *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	var tail []byte
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if p.takeMarker(tail, buf[:n]) {
				cut.Store(true)
			}
			tail = append(tail[:0], buf[max(0, n-64):n]...)
			if _, werr := server.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			client.Close()
			server.Close()
			return
		}
	}
}

// replies forwards what server answers to client, until cut is set and
// the marked request has run (see armUntil): then what Redis answered
// (to the marked request, at least) is dropped and both connections are
// closed.
func (p *cutProxy) replies(server, client net.Conn, cut *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 && cut.Load() && p.hasRun() {
			p.cuts.Add(1)
			client.Close()
			server.Close()
			return
		}
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			client.Close()
			server.Close()
			return
		}
	}
}

func (p *cutProxy) close() { closeProxy(p.ln, &p.mu, &p.conns, &p.wg) }

// closeProxy closes a proxy's listener ln and its connections conns
// (under mu), then waits for its goroutines (wg).
func closeProxy(ln net.Listener, mu *sync.Mutex, conns *[]net.Conn, wg *sync.WaitGroup) {
	ln.Close()
	mu.Lock()
	for _, c := range *conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
}

// newCutBackend returns a Backend whose client goes through a cutProxy to
// srv, the proxy, and a Backend on the same keys that reaches srv
// directly.
func newCutBackend(t *testing.T, srv *redistest.Server) (*redisbackend.Backend, *cutProxy, *redisbackend.Backend) {
	t.Helper()
	p := newCutProxy(t, srv)
	opt := srv.ClientOption()
	opt.InitAddress = []string{p.ln.Addr().String()}
	b := newBackend(t, testClient(t, opt), redisbackend.Config{})
	direct := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: b.Prefix()})
	return b, p, direct
}

// storedSteps returns the messages of the task's step results, as
// Redis has them.
func storedSteps(t *testing.T, b *redisbackend.Backend, id string) []string {
	t.Helper()
	snap, _, err := b.Snapshot(context.Background(), id)
	require.NoError(t, err)
	var out []string
	for _, s := range snap.Details.StepResults {
		out = append(out, s.Message)
	}
	return out
}

// TestKeyedAppendCutBeforeReply: an Append with an append key whose
// connection is cut after Redis ran it, before its reply arrived, fails
// with progress.ErrMaybeSent (and queue.ErrUnavailable); made again with
// the same key, it records nothing more and returns the id the lost reply
// carried. Without a key, the same cut gives no ErrMaybeSent.
func TestKeyedAppendCutBeforeReply(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b, p, direct := newCutBackend(t, srv)
	ctx := context.Background()
	id := newTask().ID
	require.NoError(t, b.Create(ctx, id))
	_, err := b.Append(ctx, id, progress.LogEvent("before"))
	require.NoError(t, err)

	keyed := progress.WithAppendKey(ctx, "cut-1")
	p.arm("cut me")
	_, err = b.Append(keyed, id, progress.LogEvent("cut me"))
	require.Error(t, err)
	require.Equal(t, int32(1), p.cuts.Load(), "the connection was cut")
	assert.ErrorIs(t, err, progress.ErrMaybeSent)
	assert.ErrorIs(t, err, queue.ErrUnavailable)
	assert.NotErrorIs(t, err, progress.ErrNotSent)
	assert.Equal(t, []string{"before", "cut me"}, storedSteps(t, direct, id), "Redis ran the cut Append")
	_, ranLast, err := direct.Snapshot(ctx, id)
	require.NoError(t, err)

	last, err := b.Append(keyed, id, progress.LogEvent("cut me"))
	require.NoError(t, err, "the same key again, on a new connection")
	assert.Equal(t, ranLast, last, "the id the lost reply carried")
	assert.Equal(t, []string{"before", "cut me"}, storedSteps(t, direct, id), "recorded once")
	events, err := direct.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Len(t, events, 2)

	p.arm("unkeyed")
	_, err = b.Append(ctx, id, progress.LogEvent("unkeyed"))
	require.Error(t, err)
	assert.ErrorIs(t, err, queue.ErrUnavailable)
	assert.NotErrorIs(t, err, progress.ErrMaybeSent, "only a keyed call may be sent again")
}

// TestReportCutBeforeReplyKeptOnce: a flow's report whose Append is cut
// after Redis recorded it, before the reply (Redis going away mid-stream),
// is sent again by the reporter with its append key: every report is in
// the task once, in order.
func TestReportCutBeforeReplyKeptOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b, p, direct := newCutBackend(t, srv)
	ctx := context.Background()
	id := newTask().ID
	require.NoError(t, b.Create(ctx, id))
	var logs syncbuf.Buffer
	r := progress.NewTaskReporter(b, id, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, r.Start(ctx, "Running"))
	r.Log("before")
	require.NoError(t, r.Flush(ctx))

	p.arm("cut me")
	r.Log("cut me")
	r.Log("and me") // in the cut batch, or the one after it
	require.NoError(t, r.Flush(ctx))
	r.Log("after")
	require.NoError(t, r.Succeed(ctx, "done"))

	require.Equal(t, int32(1), p.cuts.Load(), "the connection was cut")
	assert.Contains(t, logs.String(), "may not have been recorded; retrying")
	assert.NotContains(t, logs.String(), "not recorded\"", "nothing was dropped")
	assert.Equal(t, []string{"before", "cut me", "and me", "after"}, storedSteps(t, direct, id), "every report once, in order")
	events, err := direct.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Len(t, events, 6, "start, four reports, end")
}

// TestEndCutBeforeReplyKeptOnce: the worker's record of a task's end
// whose connection is cut after Redis ran it, before the reply arrived
// (Redis going away mid-call), is sent again with its append key: the
// flow ran once, the task ended once and was let go once (the one-step
// end, lua/finish.lua, reports the lease acknowledged by the call it
// repeats; a FAILURE is buried once), and it was not given back.
func TestEndCutBeforeReplyKeptOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want progress.State
	}{
		{"success", nil, progress.StateSuccess},
		{"failure", flow.Permanent(errors.New("no luck, end marker")), progress.StateFailure},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			b, p, direct := newCutBackend(t, srv)
			ctx := context.Background()
			reg := registry.New()
			var runs atomic.Int32
			reg.MustRegister("once", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
				runs.Add(1)
				ft.Progress.Log("working")
				return "the result, end marker", tt.err
			}))
			broker := queue.NewBroker(direct, direct, queue.BrokerConfig{Registry: reg})
			var logs syncbuf.Buffer
			w := queue.NewWorker(b, nil, queue.WorkerConfig{
				Registry: reg, Lease: time.Minute, Backoff: func(int) time.Duration { return 10 * time.Millisecond },
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			id, err := broker.Enqueue(ctx, "once", nil, queue.EnqueueOptions{MaxAttempts: 3})
			require.NoError(t, err)
			ended := func() bool {
				snap, _, err := direct.Snapshot(ctx, id)
				return err == nil && snap.State.Terminal()
			}
			p.armUntil("end marker", ended)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx) }()
			eventually(t, func() bool {
				return ended() && pendingEntries(t, srv, direct.Prefix()) == 0
			}, "the task ended and was let go")
			stop()
			select {
			case err := <-done:
				require.NoError(t, err, "Worker.Run")
			case <-time.After(waitLimit):
				require.FailNow(t, "Worker.Run did not return")
			}

			require.Equal(t, int32(1), p.cuts.Load(), "the connection was cut")
			assert.Equal(t, int32(1), runs.Load(), "the flow ran once")
			snap, _, err := direct.Snapshot(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, tt.want, snap.State)
			assert.Equal(t, []string{"working"}, storedSteps(t, direct, id))
			events, err := direct.Events(ctx, id, "")
			require.NoError(t, err)
			terminal := 0
			for _, e := range events {
				if e.Terminal() {
					terminal++
				}
			}
			assert.Equal(t, 1, terminal, "the end is recorded once")
			task, err := direct.Get(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, 1, task.Attempt, "no lease after the first")
			assert.Zero(t, task.HandBacks, "not given back")
			dead, err := direct.Dead(ctx, 10)
			require.NoError(t, err)
			if tt.want == progress.StateFailure {
				require.Len(t, dead, 1, "buried once")
				assert.Equal(t, id, dead[0].ID)
			} else {
				assert.Empty(t, dead)
			}
			assert.Contains(t, logs.String(), "task state change may not have been recorded; retrying with its append key")
			assert.NotContains(t, logs.String(), "giving the task back")
			assert.NotContains(t, logs.String(), "acknowledging the task failed")
			assert.NotContains(t, logs.String(), "burying the failed task failed")
		})
	}
}
