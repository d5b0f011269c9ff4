// Package queuetest is the conformance suite of queue.Backend
// implementations. Every backend of this module (in-memory, Redis) passes
// it, and so should a backend written outside it:
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) (queue.Backend, progress.Backend) {
//			return mybackend.New(...), progress.NewMemoryStore(progress.MemoryConfig{})
//		})
//	}
//
// A backend that is also the progress store may offer the one-step path
// that queue.NewBroker and queue.NewWorker take when given a nil store
// (see there), by having these methods, whose contracts are those of the
// interfaces below:
//
//	CreateAndEnqueue(ctx context.Context, t *queue.Task) error
//	AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (lastID string, acked bool, err error)
//	FetchWithState(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, []progress.State, error)
//
// The suite checks those it finds.
//
// The suite checks the Backend contract directly (ordering, blocking
// fetches, delays, leases, cancellation) and then runs tasks end to end
// through a queue.Broker and queue.Workers. Its timings are short
// (leases of a few hundred milliseconds at most) but it never asserts how
// long anything took, so a slow machine makes it slower, not flaky.
package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// Run runs the whole suite. newBackends is called once per subtest and
// must return empty backends that share nothing with those of other
// subtests; it registers their teardown with t.Cleanup. The queue backend
// and the progress backend are the pair a deployment would use together.
func Run(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("Backend", func(t *testing.T) { runBackend(t, newBackends) })
	t.Run("Worker", func(t *testing.T) { runWorker(t, newBackends) })
	t.Run("FinishHooks", func(t *testing.T) { runFinishHooks(t, newBackends) })
	t.Run("Idempotency", func(t *testing.T) { runIdempotency(t, newBackends) })
	t.Run("CallerLimits", func(t *testing.T) { runCallerLimits(t, newBackends) })
	t.Run("Inspector", func(t *testing.T) { runInspector(t, newBackends) })
	t.Run("Steps", func(t *testing.T) { runSteps(t, newBackends) })
	t.Run("Wait", func(t *testing.T) { runWait(t, newBackends) })
	t.Run("Attempts", func(t *testing.T) { runAttempts(t, newBackends) })
	t.Run("NoRuns", func(t *testing.T) { runNoRuns(t, newBackends) })
	t.Run("Liveness", func(t *testing.T) { runLiveness(t, newBackends) })
	t.Run("Limits", func(t *testing.T) { runLimits(t, newBackends) })
	t.Run("ReportLimit", func(t *testing.T) { runReportLimit(t, newBackends) })
	t.Run("Options", func(t *testing.T) { runOptions(t, newBackends) })
}

const (
	// long bounds the wait for something that must happen.
	long = 15 * time.Second
	// short is how long the suite watches for something that must not
	// happen.
	short = 100 * time.Millisecond
	// poll is the interval of polling loops.
	poll = 5 * time.Millisecond
)

// newTask returns a task as a Broker would enqueue it.
func newTask() *queue.Task {
	return &queue.Task{
		ID:          queue.NewID(),
		Flow:        "conformance",
		Inputs:      json.RawMessage(`{"question":"why is the sky blue?","n":3}`),
		MaxAttempts: 3,
		Timeout:     time.Minute,
		EnqueuedAt:  time.Now().UTC().Truncate(time.Millisecond),
	}
}

func enqueue(t *testing.T, b queue.Backend, tasks ...*queue.Task) {
	t.Helper()
	for _, task := range tasks {
		require.NoError(t, b.Enqueue(context.Background(), task), "enqueue %s", task.ID)
	}
}

// fetch leases up to max tasks, waiting for them as long as needed.
func fetch(t *testing.T, b queue.Backend, max int, lease time.Duration) []*queue.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	leases, err := b.Fetch(ctx, "conformance-worker", max, lease)
	require.NoError(t, err, "Fetch")
	require.NotEmpty(t, leases, "Fetch returned without error but with no task")
	require.LessOrEqual(t, len(leases), max, "Fetch leased more tasks than max")
	return leases
}

// fetchOne leases one task, waiting for it as long as needed.
func fetchOne(t *testing.T, b queue.Backend, lease time.Duration) *queue.Lease {
	t.Helper()
	return fetch(t, b, 1, lease)[0]
}

// requireNothingReady checks that Fetch finds nothing for a while.
func requireNothingReady(t *testing.T, b queue.Backend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	leases, err := b.Fetch(ctx, "conformance-worker", 10, time.Minute)
	require.ErrorIs(t, err, context.DeadlineExceeded, "Fetch should have found nothing, got %d tasks", len(leases))
	require.Empty(t, leases)
}

// eventually polls cond until it holds, failing the test after long.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(long)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNowf(t, "condition not met in time", msg, args...)
		}
		time.Sleep(poll)
	}
}

// harness is a Broker and Worker setup on fresh backends with a private
// registry.
type harness struct {
	t       *testing.T
	backend queue.Backend
	store   progress.Backend
	reg     *registry.Registry
	broker  *queue.Broker
	// settleFlow is set once the flow of settle is registered.
	settleFlow bool
	// started are the workers start and startOn started.
	started []*runningWorker
}

func newHarness(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) *harness {
	t.Helper()
	b, s := newBackends(t)
	require.NotNil(t, b)
	require.NotNil(t, s)
	reg := registry.New()
	return &harness{t: t, backend: b, store: s, reg: reg, broker: queue.NewBroker(b, s, queue.BrokerConfig{Registry: reg})}
}

var quiet = slog.New(slog.DiscardHandler)

// fastBackoff retries at once, so that retries do not slow the suite.
func fastBackoff(int) time.Duration { return time.Millisecond }

// hourFrom returns a Backoff of a millisecond before the n-th retry and
// of an hour from it on, so that a test sees n-1 retries and then none.
func hourFrom(n int) func(int) time.Duration {
	return func(retry int) time.Duration {
		if retry >= n {
			return time.Hour
		}
		return time.Millisecond
	}
}

// runningWorker is a Worker started by the harness.
type runningWorker struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
}

// start runs a Worker until the test ends or stop is called. Zero fields
// of cfg get the harness's registry, a quiet logger and fastBackoff.
func (h *harness) start(cfg queue.WorkerConfig) *runningWorker {
	h.t.Helper()
	return h.startOn(h.backend, cfg)
}

// startOn is start with the worker on backend b rather than the
// harness's.
func (h *harness) startOn(b queue.Backend, cfg queue.WorkerConfig) *runningWorker {
	h.t.Helper()
	return h.run(b, h.store, cfg)
}

// startWithStore is start with the worker recording in store rather than
// the harness's (a wrapper of it).
func (h *harness) startWithStore(store progress.Store, cfg queue.WorkerConfig) *runningWorker {
	h.t.Helper()
	return h.run(h.backend, store, cfg)
}

// run is start with the worker on backend b, recording in store.
func (h *harness) run(b queue.Backend, store progress.Store, cfg queue.WorkerConfig) *runningWorker {
	h.t.Helper()
	if cfg.Registry == nil {
		cfg.Registry = h.reg
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.Backoff == nil {
		cfg.Backoff = fastBackoff
	}
	w := queue.NewWorker(b, store, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{t: h.t, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	h.t.Cleanup(func() { rw.stop() })
	h.started = append(h.started, rw)
	return rw
}

// workers returns the workers the harness started.
func (h *harness) workers() []*runningWorker { return h.started }

// stop cancels the worker's context and waits for Run to return nil.
func (rw *runningWorker) stop() {
	rw.t.Helper()
	rw.cancel()
	rw.wait()
}

// wait waits for Run to return nil; it is safe to call more than once.
func (rw *runningWorker) wait() {
	rw.t.Helper()
	select {
	case err, ok := <-rw.done:
		if ok {
			close(rw.done)
			require.NoError(rw.t, err, "Worker.Run")
		}
	case <-time.After(long):
		require.FailNow(rw.t, "Worker.Run did not return after its context ended")
	}
}

func (h *harness) enqueue(flowName string, inputs string, opts queue.EnqueueOptions) string {
	h.t.Helper()
	id, err := h.broker.Enqueue(context.Background(), flowName, json.RawMessage(inputs), opts)
	require.NoError(h.t, err, "Enqueue")
	return id
}

// declare registers flows under names for tests whose tasks are enqueued
// (the Broker accepts only registered flows) but not meant to run: if a
// worker runs one, the task fails for good.
func (h *harness) declare(names ...string) {
	for _, name := range names {
		h.reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) {
			return nil, flow.Permanent(fmt.Errorf("queuetest: flow %q is not meant to run", name))
		}))
	}
}

// enqueueUnchecked records and queues a task the Broker would refuse (a
// flow the registry does not hold, inputs its flow refuses), as a process
// with other flows (an older or newer deploy) would have enqueued it, and
// returns its id.
func (h *harness) enqueueUnchecked(flowName, inputs string) string {
	h.t.Helper()
	task := newTask()
	task.Flow, task.Inputs = flowName, json.RawMessage(inputs)
	if inputs == "" {
		task.Inputs = json.RawMessage("{}")
	}
	require.NoError(h.t, h.store.Create(context.Background(), task.ID), "record task %s", task.ID)
	enqueue(h.t, h.backend, task)
	return task.ID
}

func (h *harness) snapshot(id string) progress.Snapshot {
	h.t.Helper()
	snap, _, err := h.store.Snapshot(context.Background(), id)
	require.NoError(h.t, err, "Snapshot %s", id)
	return snap
}

// waitTerminal waits for the task to reach SUCCESS or FAILURE and returns
// its snapshot.
func (h *harness) waitTerminal(id string) progress.Snapshot {
	h.t.Helper()
	return h.waitTerminalWithin(id, long)
}

// waitTerminalWithin is waitTerminal waiting up to d.
func (h *harness) waitTerminalWithin(id string, d time.Duration) progress.Snapshot {
	h.t.Helper()
	// It polls the task's head, whose cost does not grow with the task's
	// reports, and reads the snapshot once the head says the task ended:
	// polling snapshots of many megabytes (the report limit's tests)
	// would keep the store busy, slowing the very writes the test waits
	// for, and a poll slowed by one would notice the end late.
	// A read that the store could not answer in time (queue.ErrUnavailable:
	// a snapshot of many megabytes under the race detector on a loaded
	// machine can take longer than the backend's operation timeout) is
	// tried again at the next poll, until the deadline; any other error
	// fails at once.
	deadline := time.Now().Add(d)
	retry := func(what string, err error) {
		h.t.Helper()
		if !errors.Is(err, queue.ErrUnavailable) || time.Now().After(deadline) {
			require.NoError(h.t, err, "%s %s", what, id)
		}
		h.t.Logf("%s %s: %v; trying again", what, id, err)
	}
	var state progress.State
	for {
		s, _, err := h.store.Head(context.Background(), id)
		if err != nil {
			retry("Head", err)
		} else {
			state = s
		}
		if state.Terminal() {
			snap, _, err := h.store.Snapshot(context.Background(), id)
			if err == nil {
				return snap
			}
			retry("Snapshot", err)
		}
		if time.Now().After(deadline) {
			snap, _, _ := h.store.Snapshot(context.Background(), id)
			require.FailNowf(h.t, "condition not met in time", "task %s did not reach a terminal state; last %v", id, snapSummary{&snap})
		}
		time.Sleep(poll)
	}
}

// snapSummary prints a snapshot's state, progress, status and number of
// steps, not its steps: a failure message holding the megabytes of the
// report limit's tests could not be shown.
type snapSummary struct{ snap *progress.Snapshot }

func (s snapSummary) String() string {
	d := s.snap.Details
	status := d.Status
	if len(status) > 200 {
		status = fmt.Sprintf("%.80q... (%d bytes)", status, len(status))
	}
	return fmt.Sprintf("state %s, progress %d, status %q, %d steps", s.snap.State, d.Progress, status, len(d.StepResults))
}

// stepMessages lists the messages of the task's log steps.
func stepMessages(snap progress.Snapshot) []string {
	var msgs []string
	for _, s := range snap.Details.StepResults {
		if s.Type == progress.StepLog {
			msgs = append(msgs, s.Message)
		}
	}
	return msgs
}

// warmUpTasks is how many tasks goroutineBaseline runs and follows: enough
// that their random ids fall on every shard of a Redis Cluster of three
// masters but once in 100,000 times (3 × (2/3)^32).
const warmUpTasks = 32

// goroutineBaseline runs tasks through a worker and follows each one's
// live feed to its end first, so that whatever a backend sets up once is
// in place (connection pools, and on a Redis Cluster a subscription
// connection to each master that served a feed, which it keeps), then
// returns the number of goroutines.
func (h *harness) goroutineBaseline() int {
	h.t.Helper()
	h.reg.MustRegister("warm-up", flow.Func(func(context.Context, *flow.Task) (any, error) { return "warm", nil }))
	w := h.start(queue.WorkerConfig{})
	ids := make([]string, warmUpTasks)
	for i := range ids {
		ids[i] = h.enqueue("warm-up", "", queue.EnqueueOptions{})
	}
	for _, id := range ids {
		h.waitTerminal(id)
	}
	w.stop()
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	for _, id := range ids {
		events, err := h.store.Subscribe(ctx, id, "")
		require.NoError(h.t, err)
		for range events { // the feed of an ended task closes after its last event
		}
	}
	require.NoError(h.t, ctx.Err(), "the feeds of the warm-up tasks did not close")
	return runtime.NumGoroutine()
}

// requireGoroutinesSettle waits for the number of goroutines to fall back
// to base.
func requireGoroutinesSettle(t *testing.T, base int) {
	t.Helper()
	leakcheck.Settle(t, base, long)
}

// waitBuried waits for the task to be in the dead-letter set and returns
// its entry.
func (h *harness) waitBuried(id string) queue.DeadTask {
	h.t.Helper()
	var found *queue.DeadTask
	eventually(h.t, func() bool {
		for _, d := range fetchDead(h.t, h.backend) {
			if d.ID == id {
				found = &d
				return true
			}
		}
		return false
	}, "task %s was not buried", id)
	return *found
}

// requireNotBuried checks that the task is not in the dead-letter set.
// Call it once the worker is done with the task (see settle).
func (h *harness) requireNotBuried(id string) {
	h.t.Helper()
	for _, d := range fetchDead(h.t, h.backend) {
		assert.NotEqual(h.t, id, d.ID, "task %s buried: %+v", id, d)
	}
}

// registerCounting registers a flow under name that counts its runs, and
// returns the count.
func (h *harness) registerCounting(name string) *atomic.Int32 {
	var ran atomic.Int32
	h.reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) {
		ran.Add(1)
		return "ran", nil
	}))
	return &ran
}

// settle runs a marker task to the end. With a worker of one slot, which
// takes tasks in order, it returns once the worker is done with every task
// it had fetched before.
func (h *harness) settle() {
	h.t.Helper()
	if !h.settleFlow {
		h.reg.MustRegister("settle-marker", flow.Func(func(context.Context, *flow.Task) (any, error) { return "settled", nil }))
		h.settleFlow = true
	}
	snap := h.waitTerminal(h.enqueue("settle-marker", "", queue.EnqueueOptions{}))
	require.Equal(h.t, progress.StateSuccess, snap.State, "marker task: %q", snap.Details.Status)
}
