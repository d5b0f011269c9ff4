package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// runLimits checks a flow's policy (registry.Policy) end to end: its time
// limit, attempts and backoff take the place of the Broker's and the
// Worker's, and its concurrency and rate limits hold across workers,
// with the tasks that wait PENDING, saying so, and using no attempt.
func runLimits(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("ConcurrencyAcrossWorkers", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var running, most atomic.Int32
		var runs atomic.Int32
		h.reg.MustRegister("limited", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			if runs.Add(1) <= 2 {
				// The first two wait for each other: both slots are used.
				deadline := time.Now().Add(long)
				for most.Load() < 2 && time.Now().Before(deadline) {
					time.Sleep(poll)
				}
			} else {
				time.Sleep(2 * poll)
			}
			if ft.Attempt == 1 && strings.HasSuffix(ft.ID, "0") {
				return nil, errors.New("fails once: its retry waits for a slot again")
			}
			return "ok", nil
		}), registry.Concurrency(2))
		for range 3 {
			h.start(queue.WorkerConfig{Concurrency: 4})
		}
		ids := make([]string, 16)
		for i := range ids {
			ids[i] = h.enqueue("limited", "", queue.EnqueueOptions{})
		}
		for _, id := range ids {
			snap := h.waitTerminal(id)
			assert.Equal(t, progress.StateSuccess, snap.State, "task %s: %q", id, snap.Details.Status)
		}
		assert.Equal(t, int32(2), most.Load(), "at most 2 ran at once, and 2 did")
	})

	t.Run("WaitingIsPending", func(t *testing.T) {
		h := newHarness(t, newBackends)
		release := make(chan struct{})
		h.registerHeld("one", release, registry.Concurrency(1))
		h.start(queue.WorkerConfig{Concurrency: 4})
		first := h.enqueue("one", "", queue.EnqueueOptions{})
		eventually(t, func() bool { return h.snapshot(first).State == progress.StateProgress }, "first task starts")
		second := h.enqueue("one", "", queue.EnqueueOptions{})

		time.Sleep(short) // a worker with free slots has had time to take it
		snap := h.snapshot(second)
		assert.Equal(t, progress.StatePending, snap.State)
		assert.Equal(t, "waiting for a slot of flow one (at most 1 at once)", snap.Details.Status)
		task, err := h.backend.Get(context.Background(), second)
		require.NoError(t, err)
		assert.Equal(t, 0, task.Attempt, "waiting uses no attempt")

		close(release)
		for _, id := range []string{first, second} {
			snap := h.waitTerminal(id)
			assert.Equal(t, progress.StateSuccess, snap.State, "%q", snap.Details.Status)
		}
		task, err = h.backend.Get(context.Background(), second)
		require.NoError(t, err)
		assert.Equal(t, 1, task.Attempt, "the waiting task ran once, as its first attempt")
	})

	t.Run("NoHeadOfLineBlocking", func(t *testing.T) {
		h := newHarness(t, newBackends)
		release := make(chan struct{})
		h.registerHeld("slow", release, registry.Concurrency(1))
		ran := h.registerCounting("free")
		h.start(queue.WorkerConfig{Concurrency: 2})
		t.Cleanup(func() { close(release) }) // before the worker stops
		slow := make([]string, 4)
		for i := range slow {
			slow[i] = h.enqueue("slow", "", queue.EnqueueOptions{})
		}
		free := h.enqueue("free", "", queue.EnqueueOptions{})
		snap := h.waitTerminal(free)
		assert.Equal(t, progress.StateSuccess, snap.State, "a flow without limits runs past the waiting tasks of a limited one")
		assert.Equal(t, int32(1), ran.Load())
		// The slow task that runs may record its start after the free
		// one ended: its start goes with its flow's first events, in
		// the background, and it reports none.
		eventually(t, func() bool {
			running := 0
			for _, id := range slow {
				if h.snapshot(id).State != progress.StatePending {
					running++
				}
			}
			return running == 1
		}, "one slow task runs, the others wait")
	})

	t.Run("DepthCountsWaiting", func(t *testing.T) {
		h := newHarness(t, newBackends)
		d, ok := h.backend.(queue.DepthReader)
		if !ok {
			t.Skip("the backend has no Depth (optional)")
		}
		h.reg.MustRegister("gated", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }), registry.Concurrency(1))
		for range 3 {
			h.enqueue("gated", "", queue.EnqueueOptions{})
		}
		depth, err := d.Depth(context.Background())
		require.NoError(t, err)
		assert.Equal(t, queue.Depth{Ready: 1, Delayed: 2}, depth, "one took the slot; the two waiting for it count as delayed")
	})

	t.Run("CancelWhileWaiting", func(t *testing.T) {
		h := newHarness(t, newBackends)
		d, ok := h.backend.(queue.DepthReader)
		if !ok {
			t.Skip("the backend has no Depth (optional)")
		}
		release := make(chan struct{})
		runs := h.registerHeld("single", release, registry.Concurrency(1))
		h.start(queue.WorkerConfig{Concurrency: 4})
		t.Cleanup(func() { close(release) }) // before the worker stops
		first := h.enqueue("single", "", queue.EnqueueOptions{})
		eventually(t, func() bool { return h.snapshot(first).State == progress.StateProgress }, "first task starts")
		waiting := h.enqueue("single", "", queue.EnqueueOptions{})
		require.NoError(t, h.broker.Cancel(context.Background(), waiting))

		snap := h.waitTerminal(waiting)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		eventually(t, func() bool {
			depth, err := d.Depth(context.Background())
			require.NoError(t, err)
			return depth == queue.Depth{Running: 1}
		}, "the cancelled task leaves the line at once, without waiting for the slot")
		assert.Equal(t, int32(1), runs.Load(), "the cancelled task never ran")
		assert.Equal(t, progress.StateProgress, h.snapshot(first).State, "the first still holds the slot")
	})

	t.Run("Rate", func(t *testing.T) {
		h := newHarness(t, newBackends)
		ran := h.registerCountingWith("quota", registry.Rate(2, time.Hour))
		h.start(queue.WorkerConfig{Concurrency: 4})
		ids := make([]string, 4)
		for i := range ids {
			ids[i] = h.enqueue("quota", "", queue.EnqueueOptions{})
		}
		eventually(t, func() bool { return ran.Load() == 2 }, "two tasks start")
		time.Sleep(short)
		assert.Equal(t, int32(2), ran.Load(), "no more than 2 start within the hour")
		// The two that ran record their start and end after their
		// flow's run, which may be after the sleep on a loaded machine.
		var waiting []progress.Snapshot
		var waitingIDs []string
		eventually(t, func() bool {
			waiting, waitingIDs = waiting[:0], waitingIDs[:0]
			for _, id := range ids {
				if snap := h.snapshot(id); snap.State == progress.StatePending {
					waiting, waitingIDs = append(waiting, snap), append(waitingIDs, id)
				}
			}
			return len(waiting) == 2
		}, "two tasks wait, PENDING, and the two that ran left PENDING")
		for i, snap := range waiting {
			assert.Equal(t, "waiting for a slot of flow quota (2 starts per 1h0m0s)", snap.Details.Status)
			task, err := h.backend.Get(context.Background(), waitingIDs[i])
			require.NoError(t, err)
			assert.Equal(t, 0, task.Attempt)
		}
	})

	t.Run("RateWindowMoves", func(t *testing.T) {
		h := newHarness(t, newBackends)
		ran := h.registerCountingWith("paced", registry.Rate(1, 20*time.Millisecond))
		h.start(queue.WorkerConfig{Concurrency: 4})
		ids := make([]string, 3)
		for i := range ids {
			ids[i] = h.enqueue("paced", "", queue.EnqueueOptions{})
		}
		for _, id := range ids {
			assert.Equal(t, progress.StateSuccess, h.waitTerminal(id).State)
		}
		assert.Equal(t, int32(3), ran.Load())
	})

	t.Run("RateCountsStarts", func(t *testing.T) {
		// The rate counts the starts of the flow's runs, not the tasks
		// let through to the workers: tasks let through while no worker
		// runs start when one does, and their starts hold the window from
		// then on, so the next ones wait for it to move on past them. A
		// retry is a start too.
		const n, per = 3, 500 * time.Millisecond
		// The backend counts a start as a worker leases the task, by its
		// own clock (Redis's, on Redis), and the flow notes its start here
		// a little later: skew bounds how much that delay may vary from
		// one task to another (scheduling on a loaded machine, the race
		// detector), by which two starts that the backend keeps per apart
		// may be seen closer.
		const skew = 150 * time.Millisecond
		h := newHarness(t, newBackends)
		var starts seen[time.Time]
		h.reg.MustRegister("quota", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
			starts.add(time.Now())
			if ft.Attempt == 1 && strings.Contains(string(ft.Inputs), "once") {
				return nil, errors.New("fails once: its retry starts again")
			}
			return "ok", nil
		}), registry.Rate(n, per))
		ids := make([]string, 3*n)
		for i := range ids {
			inputs := `{}`
			if i%3 == 0 {
				inputs = `{"fail": "once"}`
			}
			ids[i] = h.enqueue("quota", inputs, queue.EnqueueOptions{})
		}
		// The window in which the first n were let through passes before
		// a worker runs.
		time.Sleep(per + short)
		h.start(queue.WorkerConfig{Concurrency: 4 * n})
		for _, id := range ids {
			snap := h.waitTerminal(id)
			assert.Equal(t, progress.StateSuccess, snap.State, "task %s: %q", id, snap.Details.Status)
		}
		got := starts.get()
		slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
		require.Len(t, got, 3*n+n, "each task started once, and those that failed once twice")
		for i := 0; i+n < len(got); i++ {
			assert.GreaterOrEqual(t, got[i+n].Sub(got[i]), per-skew,
				"starts %d to %d (of %d) are within %s: more than %d in a window of %s", i+1, i+n+1, len(got), got[i+n].Sub(got[i]), n, per)
		}
	})

	t.Run("RateSlotOfCancelledTask", func(t *testing.T) {
		// A task let through and cancelled before a worker started it
		// does not hold its flow's rate for ever: its worker ends it
		// without running it, and the next task starts.
		h := newHarness(t, newBackends)
		ran := h.registerCountingWith("quota", registry.Rate(1, 200*time.Millisecond))
		cancelled := h.enqueue("quota", "", queue.EnqueueOptions{})
		next := h.enqueue("quota", "", queue.EnqueueOptions{})
		require.NoError(t, h.broker.Cancel(context.Background(), cancelled))
		h.start(queue.WorkerConfig{Concurrency: 4})
		snap := h.waitTerminal(cancelled)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		snap = h.waitTerminal(next)
		assert.Equal(t, progress.StateSuccess, snap.State, "%q", snap.Details.Status)
		assert.Equal(t, int32(1), ran.Load(), "the cancelled task never ran")
	})

	t.Run("RateStartOfTakenBackTask", func(t *testing.T) {
		// A task taken back from a dead worker keeps the start its first
		// lease counted, and counts no other: one more task of the flow
		// starts within the hour, and no third.
		h := newHarness(t, newBackends)
		reg, ok := h.backend.(queue.WorkerRegistry)
		if !ok {
			t.Skipf("%T keeps no worker registry", h.backend)
		}
		ran := h.registerCountingWith("quota", registry.Rate(2, time.Hour))
		ctx := context.Background()
		first := h.enqueue("quota", "", queue.EnqueueOptions{})
		// A worker that died right after it leased the task.
		require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "killed", Heartbeat: 10 * time.Millisecond}))
		l := fetchAs(t, h.backend, "killed")
		require.Equal(t, first, l.Task.ID)

		h.start(queue.WorkerConfig{Concurrency: 4, Heartbeat: 50 * time.Millisecond, Lease: time.Hour})
		snap := h.waitTerminal(first)
		assert.Equal(t, progress.StateSuccess, snap.State, "%q", snap.Details.Status)
		task, err := h.backend.Get(ctx, first)
		require.NoError(t, err)
		assert.Equal(t, 2, task.Attempt, "run again, taken back")
		second := h.enqueue("quota", "", queue.EnqueueOptions{})
		snap = h.waitTerminal(second)
		assert.Equal(t, progress.StateSuccess, snap.State, "the second start of the hour: %q", snap.Details.Status)
		third := h.enqueue("quota", "", queue.EnqueueOptions{})
		time.Sleep(short) // a worker with free slots has had time to take it
		snap = h.snapshot(third)
		assert.Equal(t, progress.StatePending, snap.State, "a third start within the hour")
		assert.Equal(t, "waiting for a slot of flow quota (2 starts per 1h0m0s)", snap.Details.Status)
		assert.Equal(t, int32(2), ran.Load())
	})

	t.Run("HookRerunsTakeNoSlot", func(t *testing.T) {
		// A task whose finish hooks ask to run again comes back for its
		// hooks only: its flow does not run, so it neither waits for a
		// slot of its flow nor takes one.
		h := newHarness(t, newBackends)
		release := make(chan struct{})
		runs := h.registerHeld("single", release, registry.Concurrency(1))
		rec := newFinishes(h)
		var asked atomic.Bool
		queued := make(chan struct{})
		h.start(queue.WorkerConfig{
			Concurrency: 4,
			OnFinish: []queue.FinishHook{rec.hook, func(context.Context, queue.Finished) error {
				if asked.CompareAndSwap(false, true) {
					<-queued // the second task waits for the slot first
					return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
				}
				return nil
			}},
		})
		t.Cleanup(func() { close(release) }) // before the worker stops
		first := h.enqueue("single", "", queue.EnqueueOptions{})
		release <- struct{}{} // the first run ends, and its hooks ask again
		rec.waitCalls(t, first, 1)
		second := h.enqueue("single", "", queue.EnqueueOptions{})
		close(queued)
		eventually(t, func() bool { return runs.Load() == 2 }, "the second task takes the slot")
		calls := rec.waitCalls(t, first, 2)
		assert.True(t, calls[1].f.FoundEnded, "the hooks ran again while the second task held the slot")
		// The second's start is recorded with its flow's first events,
		// after its flow has begun, where the backend read the task's
		// state as it leased it (see stateFetcher in package queue): wait for it.
		eventually(t, func() bool { return h.snapshot(second).State == progress.StateProgress },
			"the second task, holding the slot, is not recorded as started")
		third := h.enqueue("single", "", queue.EnqueueOptions{})
		time.Sleep(short) // a worker with free slots has had time to take it
		assert.Equal(t, progress.StatePending, h.snapshot(third).State, "the slot is still taken, by the second task alone")
	})

	t.Run("HookRerunsAreNoStarts", func(t *testing.T) {
		// Nor does the lease that runs the hooks again count as a start
		// of its flow's rate.
		h := newHarness(t, newBackends)
		ran := h.registerCountingWith("quota", registry.Rate(2, time.Hour))
		rec := newFinishes(h)
		var asked atomic.Bool
		h.start(queue.WorkerConfig{
			Concurrency: 4,
			OnFinish: []queue.FinishHook{rec.hook, func(context.Context, queue.Finished) error {
				if asked.CompareAndSwap(false, true) {
					return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
				}
				return nil
			}},
		})
		first := h.enqueue("quota", "", queue.EnqueueOptions{})
		rec.waitCalls(t, first, 2)
		second := h.enqueue("quota", "", queue.EnqueueOptions{})
		snap := h.waitTerminal(second)
		assert.Equal(t, progress.StateSuccess, snap.State, "the second start of the hour: %q", snap.Details.Status)
		assert.Equal(t, int32(2), ran.Load())
	})

	t.Run("Timeout", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("bounded", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}), registry.Timeout(50*time.Millisecond), registry.MaxAttempts(1))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("bounded", "", queue.EnqueueOptions{})
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "timed out after 50ms", snap.Details.Status)

		task, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, 50*time.Millisecond, task.Timeout, "the flow's time limit, not the Broker's")
		own := h.enqueue("bounded", "", queue.EnqueueOptions{Timeout: 80 * time.Millisecond})
		task, err = h.backend.Get(context.Background(), own)
		require.NoError(t, err)
		assert.Equal(t, 80*time.Millisecond, task.Timeout, "a task's own time limit wins over its flow's")
	})

	t.Run("MaxAttempts", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs atomic.Int32
		h.reg.MustRegister("flaky", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.Add(1)
			return nil, errors.New("provider down")
		}), registry.MaxAttempts(2))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("flaky", "", queue.EnqueueOptions{})
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, int32(2), runs.Load(), "the flow's 2 attempts, not the Broker's 3")
	})

	t.Run("Backoff", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("quick", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			if ft.Attempt == 1 {
				return nil, errors.New("once")
			}
			return "ok", nil
		}), registry.Backoff(func(int) time.Duration { return time.Millisecond }))
		// The worker's own backoff would keep the retry for an hour.
		h.start(queue.WorkerConfig{Backoff: func(int) time.Duration { return time.Hour }})
		id := h.enqueue("quick", "", queue.EnqueueOptions{})
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "%q", snap.Details.Status)
	})
}

// registerHeld registers a flow under name, with opts, whose runs last
// until release is closed (or their context ends) and then succeed; it
// counts the runs and returns the count.
func (h *harness) registerHeld(name string, release <-chan struct{}, opts ...registry.Option) *atomic.Int32 {
	var runs atomic.Int32
	h.reg.MustRegister(name, flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "ok", nil
	}), opts...)
	return &runs
}

// registerCountingWith registers a flow under name, with opts, that
// counts its runs, and returns the count.
func (h *harness) registerCountingWith(name string, opts ...registry.Option) *atomic.Int32 {
	var ran atomic.Int32
	h.reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) {
		ran.Add(1)
		return "ran", nil
	}), opts...)
	return &ran
}
