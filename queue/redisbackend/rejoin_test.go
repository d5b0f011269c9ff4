package redisbackend_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// gatedBeats is the Backend of one worker whose heartbeats, while gated
// is set, get through only one at a time, when the test lets them
// (beatOnce); the others fail when their context ends. through counts
// those that got through.
type gatedBeats struct {
	*redisbackend.Backend
	gated   atomic.Bool
	permits chan chan error // each lets one heartbeat through, and hears how it went
	through atomic.Int64
}

func newGatedBeats(b *redisbackend.Backend) *gatedBeats {
	return &gatedBeats{Backend: b, permits: make(chan chan error)}
}

func (g *gatedBeats) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	var reply chan error
	if g.gated.Load() {
		select {
		case reply = <-g.permits:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := g.Backend.Heartbeat(ctx, w)
	if err == nil {
		g.through.Add(1)
	}
	if reply != nil {
		reply <- err
	}
	return err
}

// beatOnce lets the next heartbeat through, and reports whether it got
// to Redis.
func (g *gatedBeats) beatOnce(t *testing.T) bool {
	t.Helper()
	reply := make(chan error, 1)
	select {
	case g.permits <- reply:
	case <-time.After(waitLimit):
		require.FailNow(t, "no heartbeat waited to be let through")
	}
	select {
	case err := <-reply:
		return err == nil
	case <-time.After(waitLimit):
		require.FailNow(t, "the heartbeat let through did not return")
		return false
	}
}

// waitThrough waits until more than n heartbeats got through.
func (g *gatedBeats) waitThrough(t *testing.T, n int64, what string) {
	t.Helper()
	eventually(t, func() bool { return g.through.Load() > n }, what)
}

// outageQueue is a queue on a redis-server that keeps its data across a
// restart, with one flow, "waits": its first attempt logs "waiting", then
// waits for its context to end and sends the cause on stopped; a later
// attempt returns "second".
type outageQueue struct {
	srv     *redistest.Server
	b       *redisbackend.Backend
	reg     *registry.Registry
	broker  *queue.Broker
	started chan struct{}
	stopped chan error
}

func newOutageQueue(t *testing.T) *outageQueue {
	t.Helper()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	// Each write waits for its fsync (appendfsync always): on a loaded
	// machine an operation of 300 ms at most failed the first Enqueue
	// once. While Redis is down its calls fail at once (refused), so a
	// second changes nothing of the outage.
	b := newBackend(t, newClient(t, srv), redisbackend.Config{OpTimeout: time.Second})
	q := &outageQueue{srv: srv, b: b, reg: registry.New(), started: make(chan struct{}), stopped: make(chan error, 1)}
	q.broker = queue.NewBroker(b, b, queue.BrokerConfig{Registry: q.reg})
	q.reg.MustRegister("waits", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		if ft.Attempt > 1 {
			return "second", nil
		}
		ft.Progress.Log("waiting")
		close(q.started)
		<-ctx.Done()
		q.stopped <- context.Cause(ctx)
		return nil, ctx.Err()
	}))
	return q
}

// outageHeartbeat is the heartbeat interval of a worker that must tell a
// Redis outage from its own stall: it must send MissedBeats-1 heartbeats
// in its liveness window, the last half an interval before the window
// ends, by the machine's clock. That half interval, a second, is the
// scheduling noise the outage tests bear.
const outageHeartbeat = 2 * time.Second

// workerConfig is the config of a worker of q with the given heartbeat
// interval: a lease of a minute, so that only a hand-back or a take-over
// brings a task back within a test, and retries at once.
func (q *outageQueue) workerConfig(name string, heartbeat time.Duration) queue.WorkerConfig {
	return queue.WorkerConfig{
		Name: name, Registry: q.reg, Heartbeat: heartbeat, Lease: time.Minute, Logger: quiet,
		Backoff: func(int) time.Duration { return 10 * time.Millisecond },
	}
}

// startWaiting enqueues a "waits" task with MaxAttempts 1, and returns
// its id once its flow has started and its report ("waiting") is
// recorded: the report goes out on its own goroutine, and one still on
// its way when Redis goes away is dropped.
func (q *outageQueue) startWaiting(ctx context.Context, t *testing.T) string {
	t.Helper()
	id, err := q.broker.Enqueue(ctx, "waits", nil, queue.EnqueueOptions{MaxAttempts: 1})
	require.NoError(t, err)
	select {
	case <-q.started:
	case <-time.After(waitLimit):
		require.FailNow(t, "the flow did not start")
	}
	eventually(t, func() bool {
		snap, _, err := q.b.Snapshot(ctx, id)
		return err == nil && len(snap.Details.StepResults) > 0
	}, "the first report was not recorded")
	return id
}

// stop stops Redis, once sure that the flow has not been stopped yet,
// and returns the cause the flow is stopped with while Redis is down.
func (q *outageQueue) stop(t *testing.T) error {
	t.Helper()
	select {
	case cause := <-q.stopped:
		require.FailNow(t, "the worker lapsed before Redis went away", "cause %v", cause)
	default:
	}
	q.srv.Stop()
	select {
	case cause := <-q.stopped:
		assert.ErrorContains(t, cause, "heartbeats lapsed")
		assert.ErrorContains(t, cause, "could not be reached", "the worker knows its heartbeats failed")
		return cause
	case <-time.After(waitLimit):
		require.FailNow(t, "the flow was not stopped while Redis was down")
		return nil
	}
}

// waitEnded waits for task id to end, and returns its snapshot and the
// messages of its steps.
func (q *outageQueue) waitEnded(ctx context.Context, t *testing.T, id string) (progress.Snapshot, []string) {
	t.Helper()
	var snap progress.Snapshot
	eventually(t, func() bool {
		var err error
		snap, _, err = q.b.Snapshot(ctx, id)
		return err == nil && snap.State.Terminal()
	}, "the task did not end")
	var msgs []string
	for _, s := range snap.Details.StepResults {
		msgs = append(msgs, s.Message)
	}
	return snap, msgs
}

// TestLateHeartbeatAfterOutageKeepsTask: Redis goes away for longer than
// the liveness window of worker A, which runs a task with MaxAttempts 1,
// and comes back. Worker B's heartbeats get through again at once, A's
// only after B has beaten twice and past A's deadline (a slow
// reconnection, say). B must not take that for A's death: it has not
// been in contact for a whole window of its own since the outage. So A
// hands its task back without spending an attempt, and the task runs
// again and succeeds. A worker that is really gone is still found dead
// once B (or A) has been in contact for a window: a task leased by a
// worker that beats once after the outage and never again runs again,
// saying that its worker was lost, long before its hour-long lease
// passes.
//
// The intervals (A 2 s, B 2.5 s) leave a second of scheduling noise to
// A, which must send two failing heartbeats in its window to know Redis
// was away (see TestOutageLongerThanLivenessCostsNoAttempt). The test
// waits for events, not for time: it lets B's heartbeats through one at
// a time from the outage on (two that fail while Redis is down, then as
// many as it takes after), and holds A's until B has beaten past A's
// deadline. Before the fix, B's second heartbeat back took A's task
// over, and the task ended "gave up after 1 attempt: worker lost".
func TestLateHeartbeatAfterOutageKeepsTask(t *testing.T) {
	t.Parallel()
	q := newOutageQueue(t)
	q.reg.MustRegister("once", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
		return ft.Attempt, nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitLimit)
	defer cancel()

	// A task leased for an hour by a worker that has not beaten yet.
	killed, err := q.broker.Enqueue(ctx, "once", nil, queue.EnqueueOptions{MaxAttempts: 3})
	require.NoError(t, err)
	leases, err := q.b.Fetch(ctx, "killed", 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, leases, 1)

	a, b := newGatedBeats(q.b), newGatedBeats(q.b)
	t.Cleanup(func() { a.gated.Store(false); b.gated.Store(false) })
	startWorker(t, queue.NewWorker(a, nil, q.workerConfig("a", outageHeartbeat)))
	id := q.startWaiting(ctx, t)
	startWorker(t, queue.NewWorker(b, nil, q.workerConfig("b", outageHeartbeat*5/4)))
	b.waitThrough(t, 0, "worker B did not beat")

	q.stop(t)
	a.gated.Store(true)
	b.gated.Store(true)
	for range 2 {
		require.False(t, b.beatOnce(t), "a heartbeat got through while Redis was down")
	}
	q.srv.Restart()

	// B beats twice or more, the last time past A's deadline.
	for back, deadline := 0, time.Now().Add(waitLimit); ; {
		require.True(t, time.Now().Before(deadline), "worker B did not beat past worker A's deadline")
		if b.beatOnce(t) {
			back++
		}
		if back < 2 {
			continue
		}
		workers, err := q.b.Workers(ctx)
		require.NoError(t, err)
		byName := map[string]queue.WorkerInfo{}
		for _, w := range workers {
			byName[w.Name] = w
		}
		wa, wb := byName["a"], byName["b"]
		require.NotEmpty(t, wa.Name, "worker A is listed")
		if wb.LastSeen.After(wa.LastSeen.Add(wa.DeadAfter())) {
			break
		}
	}
	beforeA := a.through.Load()
	a.gated.Store(false)
	a.waitThrough(t, beforeA, "worker A's heartbeats did not get through")
	b.gated.Store(false)

	snap, msgs := q.waitEnded(ctx, t, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult))
	assert.Contains(t, msgs, "attempt 2 of 2 starts: the worker of attempt 1 could not reach the backend (not counted)")

	// The worker that held the other task beats once, and is gone.
	require.NoError(t, q.b.Heartbeat(ctx, queue.WorkerInfo{Name: "killed", Heartbeat: 100 * time.Millisecond}))
	snap, msgs = q.waitEnded(ctx, t, killed)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, "2", string(snap.Details.FinalResult))
	assert.Contains(t, msgs, "attempt 2 of 3 starts: the worker of attempt 1 was lost")
}
