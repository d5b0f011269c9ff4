package queuetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runLiveness checks recovery in seconds, on a backend that keeps a
// worker registry (queue.WorkerRegistry): the leases of a worker that
// stopped beating are taken back by the next heartbeat of another worker,
// long before they pass, and fenced off from it; a worker that beats
// keeps its tasks however long its flows run. The leases here last an
// hour, so a test that passes cannot have waited one out.
func runLiveness(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("DeadWorkerLeasesTakenBack", func(t *testing.T) {
		b, reg := registryBackend(t, newBackends)
		ctx := context.Background()
		lost, kept := newTask(), newTask()
		enqueue(t, b, lost, kept)

		// ghost beats once, takes a task and goes silent; alive beats
		// for ever (its DeadAfter is hours) and holds the other.
		require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}))
		require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "alive", Heartbeat: time.Hour}))
		ghostLease := fetchAs(t, b, "ghost")
		aliveLease := fetchAs(t, b, "alive")
		require.Equal(t, lost.ID, ghostLease.Task.ID)
		require.Equal(t, kept.ID, aliveLease.Task.ID)

		// A third worker beats, and judges the others once it has beaten
		// without a gap for its DeadAfter (900 ms).
		again := judgeUntilTaken(t, b, queue.WorkerInfo{Name: "judge", Heartbeat: 300 * time.Millisecond})
		assert.Equal(t, lost.ID, again.Task.ID, "only the silent worker's task is taken back")
		assert.Equal(t, 2, again.Task.Attempt)
		assert.Equal(t, queue.EndWorkerLost, again.Task.PreviousEnd)

		// The silent worker is fenced off, whenever it comes back.
		require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}))
		assert.ErrorIs(t, b.Extend(ctx, ghostLease, time.Hour), queue.ErrLeaseLost, "Extend")
		assert.ErrorIs(t, b.Ack(ctx, ghostLease), queue.ErrLeaseLost, "Ack")
		assert.ErrorIs(t, b.Retry(ctx, ghostLease, time.Now(), queue.EndFailed), queue.ErrLeaseLost, "Retry")
		assert.ErrorIs(t, b.Bury(ctx, ghostLease, "late"), queue.ErrLeaseLost, "Bury")

		// The worker that beats keeps its lease, and so does the new
		// holder.
		require.NoError(t, b.Extend(ctx, aliveLease, time.Hour), "a live worker's lease")
		require.NoError(t, b.Extend(ctx, again, time.Hour), "the new holder's lease")
		require.NoError(t, b.Ack(ctx, aliveLease))
		require.NoError(t, b.Ack(ctx, again))
		requireNothingReady(t, b)

		// A worker that retires is not judged: its leases (none here)
		// wait out their deadline.
		r, ok := b.(queue.Retirer)
		require.True(t, ok, "a registry's backend is a Retirer")
		require.NoError(t, r.Retire(ctx, "ghost"))
	})

	t.Run("NewcomerDoesNotJudgeYet", func(t *testing.T) {
		b, reg := registryBackend(t, newBackends)
		ctx := context.Background()
		ghost, ghostLease := silentHolder(t, b)
		eventually(t, func() bool {
			workers, err := reg.Workers(ctx)
			require.NoError(t, err)
			for _, w := range workers {
				if w.Name == ghost.Name {
					return !w.Alive(time.Now().Add(-ghost.DeadAfter()))
				}
			}
			return false
		}, "the silent worker was not found dead")

		// A worker that has beaten for less than its DeadAfter (three
		// hours) may itself just be back from an outage that the
		// silent one has not come back from yet: it leaves it alone,
		// however many times it beats.
		newcomer := queue.WorkerInfo{Name: "newcomer", Heartbeat: time.Hour}
		for range queue.MissedBeats + 1 {
			require.NoError(t, reg.Heartbeat(ctx, newcomer))
		}
		requireNothingReady(t, b)
		require.NoError(t, b.Extend(ctx, ghostLease, time.Hour), "the silent worker's lease")
		// Back in contact, the silent worker finds its lease its own
		// still: a worker that lapsed runs a task it leased meanwhile
		// once Extend says so.
		require.NoError(t, reg.Heartbeat(ctx, ghost))
		require.NoError(t, b.Extend(ctx, ghostLease, time.Hour), "the lease of the silent worker back in contact")
		require.NoError(t, b.Ack(ctx, ghostLease))
	})

	t.Run("JudgeBackFromAMissedBeatWaits", func(t *testing.T) {
		b, reg := registryBackend(t, newBackends)
		ctx := context.Background()
		// The judge beats, more often than it must, until it has been in
		// contact for longer than its DeadAfter (600 ms).
		judge := queue.WorkerInfo{Name: "judge", Heartbeat: 200 * time.Millisecond}
		beatInContact(t, reg, judge)
		_, ghostLease := silentHolder(t, b)

		// Its next heartbeat comes two intervals after the one before:
		// one did not get through, and the ghost's silence may be the
		// same outage's. It judges again once in contact for a window.
		time.Sleep(2 * judge.Heartbeat)
		require.NoError(t, reg.Heartbeat(ctx, judge))
		requireNothingReady(t, b)
		require.NoError(t, b.Extend(ctx, ghostLease, time.Hour), "the silent worker's lease, right after the judge came back")
		again := judgeUntilTaken(t, b, judge)
		assert.Equal(t, queue.EndWorkerLost, again.Task.PreviousEnd)
		assert.ErrorIs(t, b.Extend(ctx, ghostLease, time.Hour), queue.ErrLeaseLost)
		require.NoError(t, b.Ack(ctx, again))
	})

	t.Run("KilledWorkerTaskRunsAgain", func(t *testing.T) {
		h := newHarness(t, newBackends)
		reg, ok := h.backend.(queue.WorkerRegistry)
		if !ok {
			t.Skipf("%T keeps no worker registry", h.backend)
		}
		var attempts attempts
		h.reg.MustRegister("resumed", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
			attempts.add(ft.Attempt)
			return "done", nil
		}))
		id := h.enqueue("resumed", "", queue.EnqueueOptions{MaxAttempts: 3})
		ctx := context.Background()
		// A worker that died right after it leased the task.
		require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "killed", Heartbeat: 10 * time.Millisecond}))
		l := fetchAs(t, h.backend, "killed")
		require.Equal(t, id, l.Task.ID)

		h.start(queue.WorkerConfig{Heartbeat: 50 * time.Millisecond, Lease: time.Hour})
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, []int{2}, attempts.get(), "the attempts the flow ran")
		assert.Contains(t, stepMessages(snap), "attempt 2 of 3 starts: the worker of attempt 1 was lost")
	})

	t.Run("LeasedWhileLapsedNotRun", func(t *testing.T) {
		// A worker whose heartbeats stall lapses and stops its flow,
		// whose task it gives back (the run counts: the flow may have
		// stalled the worker). The Fetch it was waiting in for its free
		// slot may lease the task again while it has lapsed: no
		// heartbeat gets through for the quarter of an interval that
		// lease waits for one, and it is handed back unrun, costing the
		// task neither an attempt nor a run, before another worker may
		// take it back; the task runs once a heartbeat gets through.
		h := newHarness(t, newBackends)
		reg, ok := h.backend.(queue.WorkerRegistry)
		if !ok {
			t.Skipf("%T keeps no worker registry", h.backend)
		}
		b := &stallingRegistry{Backend: h.backend, reg: reg}
		var back atomic.Bool // set once the heartbeats go through again
		type run struct {
			attempt int
			back    bool
		}
		var runs seen[run]
		started, stopped := make(chan struct{}), make(chan struct{})
		h.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(run{ft.Attempt, back.Load()})
			if ft.Attempt > 1 {
				return "again", nil
			}
			close(started)
			<-ctx.Done()
			close(stopped)
			return nil, ctx.Err()
		}))
		// The interval is far above the scheduling noise of a loaded
		// machine: the worker must not lapse before the test stalls it.
		h.startOn(b, queue.WorkerConfig{Heartbeat: 300 * time.Millisecond, Lease: time.Hour, Concurrency: 2})
		id := h.enqueue("watched", "", queue.EnqueueOptions{MaxAttempts: 3})
		waitFor(t, started, "the flow to start")
		beats := b.beats.Load()
		eventually(t, func() bool { return b.beats.Load() > beats }, "no heartbeat reached the backend")
		select {
		case <-stopped:
			require.FailNow(t, "the worker lapsed before its heartbeats stalled")
		default:
		}
		stall := make(chan struct{})
		b.stall.Store(&stall)
		waitFor(t, stopped, "the lapse to stop the flow")
		eventually(t, func() bool { return b.leases.Load() == 2 }, "the Fetch waiting at the lapse did not lease the task again")
		// The heartbeats go through again only once that lease has been
		// handed back: one that got through while the lease waited would
		// have it run, once Extend found it still the worker's.
		eventually(t, func() bool {
			task, err := h.backend.Get(context.Background(), id)
			return err == nil && task.NoRuns == 1
		}, "the lease taken while lapsed was not handed back unrun")
		back.Store(true)
		b.stall.Store(nil)
		close(stall)

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, []run{{1, false}, {3, true}}, runs.get(), "the runs of the flow")
		task, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, 1, task.NoRuns, "the lease of the lapsed worker did not run")
		assert.Equal(t, 1, task.HandBacks, "its hand-back")
		assert.Equal(t, 2, task.Attempts(), "the stalled run and the last")
		assert.Contains(t, stepMessages(snap), "attempt 3 of 4 starts: attempt 2 was handed back before it ran (not counted)")
	})

	t.Run("SlowWorkerKeepsTask", func(t *testing.T) {
		// A worker whose heartbeats stall for DeadAfter less half an
		// interval lapses and gives its task up, as it must: intervals of
		// 200 ms made that 500 ms, which a busy machine running the race
		// detector and a Cluster's processes stalled now and then (the
		// flow then ran twice, rightly). This worker is slow, not
		// stalled: a heartbeat may come 750 ms late, an extension 1 s.
		// Even that a loaded machine running other tests with two CPU
		// hogs missed now and then: a run that stopped the flow while
		// the test process was held up for half of that (see
		// watchStalls) proves nothing, and runs again, twice at most.
		const allowed = 750 * time.Millisecond
		stalls := watchStalls(t)
		for try := 1; ; try++ {
			stalls.reset()
			snap, runs, causes := slowWorkerRun(t, newBackends)
			if runs != 1 && len(causes) > 0 && try < 3 && stalls.max() >= allowed/2 {
				t.Logf("run %d stopped the flow (%v) while the test process was held up for %v: again", try, causes, stalls.max())
				continue
			}
			assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
			assert.JSONEq(t, "1", string(snap.Details.FinalResult), "the first attempt ended the task")
			assert.Equal(t, 1, runs, "the flow ran once; stopped by %v, the test process held up for %v at most", causes, stalls.max())
			return
		}
	})
}

// slowWorkerRun runs a flow of 4 s (several DeadAfters and leases) on a
// worker that beats every 500 ms with leases of 1.5 s, next to an idle
// one that would take the task back, and returns the task's snapshot,
// how many times the flow ran and why the runs it stopped were stopped.
func slowWorkerRun(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) (progress.Snapshot, int, []error) {
	t.Helper()
	h := newHarness(t, newBackends)
	if _, ok := h.backend.(queue.WorkerRegistry); !ok {
		t.Skipf("%T keeps no worker registry", h.backend)
	}
	var runs atomic.Int32
	var causes seen[error]
	const slow = 4 * time.Second
	h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		select {
		case <-time.After(slow):
			return ft.Attempt, nil
		case <-ctx.Done():
			causes.add(context.Cause(ctx))
			return nil, context.Cause(ctx)
		}
	}))
	cfg := queue.WorkerConfig{Heartbeat: 500 * time.Millisecond, Lease: 1500 * time.Millisecond}
	for _, w := range []*runningWorker{h.start(cfg), h.start(cfg)} {
		defer w.stop()
	}
	id := h.enqueue("slow", "", queue.EnqueueOptions{MaxAttempts: 3})
	snap := h.waitTerminal(id)
	return snap, int(runs.Load()), causes.get()
}

// stallWatch is the longest a timer of the test process fired late since
// watchStalls started it, or since reset: how long the machine held the process up (a
// loaded machine, a pause), and with it the worker's heartbeats.
type stallWatch struct{ late atomic.Int64 }

func (w *stallWatch) max() time.Duration { return time.Duration(w.late.Load()) }

// reset starts the measure again.
func (w *stallWatch) reset() { w.late.Store(0) }

// watchStalls measures the process's stalls until the test ends.
func watchStalls(t *testing.T) *stallWatch {
	w := &stallWatch{}
	done := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		const tick = 10 * time.Millisecond
		for {
			before := time.Now()
			select {
			case <-done:
				return
			case <-time.After(tick):
			}
			if late := time.Since(before) - tick; late > w.max() {
				w.late.Store(int64(late))
			}
		}
	})
	t.Cleanup(func() {
		close(done)
		watching.Wait()
	})
	return w
}

// stallingRegistry is a backend whose heartbeats wait, while stall holds
// a channel, until it is closed: a worker whose heartbeat goroutine does
// not get to run (frozen, starved). beats counts the heartbeats that
// reached the backend, leases the leases Fetch handed out. It passes on
// Backend and WorkerRegistry only.
type stallingRegistry struct {
	queue.Backend
	reg    queue.WorkerRegistry
	stall  atomic.Pointer[chan struct{}]
	beats  atomic.Int64
	leases atomic.Int64
}

func (r *stallingRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	if c := r.stall.Load(); c != nil {
		<-*c
	}
	err := r.reg.Heartbeat(ctx, w)
	if err == nil {
		r.beats.Add(1)
	}
	return err
}

func (r *stallingRegistry) Workers(ctx context.Context) ([]queue.WorkerInfo, error) {
	return r.reg.Workers(ctx)
}

func (r *stallingRegistry) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	leases, err := r.Backend.Fetch(ctx, worker, max, lease)
	r.leases.Add(int64(len(leases)))
	return leases, err
}

// registryBackend returns the queue backend of fresh backends and its
// worker registry, or skips the test if it keeps none.
func registryBackend(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) (queue.Backend, queue.WorkerRegistry) {
	t.Helper()
	b, _ := newBackends(t)
	reg, ok := b.(queue.WorkerRegistry)
	if !ok {
		t.Skipf("%T keeps no worker registry", b)
	}
	return b, reg
}

// silentHolder enqueues a task and leases it, for an hour, to a worker
// that beats once (intervals of 10 ms) and then never again.
func silentHolder(t *testing.T, b queue.Backend) (queue.WorkerInfo, *queue.Lease) {
	t.Helper()
	enqueue(t, b, newTask())
	ghost := queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}
	require.NoError(t, b.(queue.WorkerRegistry).Heartbeat(context.Background(), ghost))
	return ghost, fetchAs(t, b, ghost.Name)
}

// beatInContact beats as w, four times an interval, until the backend
// has seen it beat for longer than its DeadAfter with no gap of more than
// half of that (what a judge needs, see queue.WorkerRegistry), as the
// test's clock bounds what the backend's saw: a beat was stamped between
// its call and its return. A gap of the test process (a loaded machine,
// a pause) starts the count again, rather than leaving the worker a
// newcomer that judges no one.
func beatInContact(t *testing.T, reg queue.WorkerRegistry, w queue.WorkerInfo) {
	t.Helper()
	ctx := context.Background()
	var from, prev time.Time // the return of the first beat counted, the call of the last
	deadline := time.Now().Add(long)
	for {
		called := time.Now()
		require.NoError(t, reg.Heartbeat(ctx, w))
		returned := time.Now()
		if from.IsZero() || returned.Sub(prev) > w.DeadAfter()/2 {
			from = returned
		}
		prev = called
		if called.Sub(from) > w.DeadAfter() {
			return
		}
		require.True(t, returned.Before(deadline), "%s did not get a DeadAfter in contact", w.Name)
		time.Sleep(w.Heartbeat / 4)
	}
}

// judgeUntilTaken beats as judge, a heartbeat every 20 ms at least, until
// its Fetch leases a task taken back from a dead worker, and returns that
// lease.
func judgeUntilTaken(t *testing.T, b queue.Backend, judge queue.WorkerInfo) *queue.Lease {
	t.Helper()
	ctx := context.Background()
	var again *queue.Lease
	eventually(t, func() bool {
		require.NoError(t, b.(queue.WorkerRegistry).Heartbeat(ctx, judge))
		fctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		leases, err := b.Fetch(fctx, judge.Name, 1, time.Hour)
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return false
		}
		require.Len(t, leases, 1)
		again = leases[0]
		return true
	}, "the silent worker's lease was not taken back")
	return again
}

// fetchAs leases one task for worker with a lease of an hour.
func fetchAs(t *testing.T, b queue.Backend, worker string) *queue.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	leases, err := b.Fetch(ctx, worker, 1, time.Hour)
	require.NoError(t, err, "Fetch for %s", worker)
	require.Len(t, leases, 1)
	return leases[0]
}
