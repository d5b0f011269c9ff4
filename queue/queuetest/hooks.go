package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// finishes records the calls of a finish hook.
type finishes struct {
	h     *harness
	mu    sync.Mutex
	calls []finishCall
}

// finishCall is one call of a finish hook: what it was given, and the
// state the store held for the task as the hook ran.
type finishCall struct {
	f      queue.Finished
	stored progress.State
}

func newFinishes(h *harness) *finishes { return &finishes{h: h} }

// hook is the FinishHook that records its calls.
func (r *finishes) hook(ctx context.Context, f queue.Finished) error {
	snap, _, err := r.h.store.Snapshot(ctx, f.Task.ID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, finishCall{f: f, stored: snap.State})
	return nil
}

// of returns the calls made for task id.
func (r *finishes) of(id string) []finishCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []finishCall
	for _, c := range r.calls {
		if c.f.Task.ID == id {
			out = append(out, c)
		}
	}
	return out
}

// waitCalls waits until the hook has been called n times for task id,
// and returns those calls.
func (r *finishes) waitCalls(t *testing.T, id string, n int) []finishCall {
	t.Helper()
	eventually(t, func() bool { return len(r.of(id)) >= n }, "the finish hook was not called %d times for task %s", n, id)
	return r.of(id)
}

// losingAcks is a backend whose Ack and Bury fail while lose is set, as
// they do for a worker that dies, or loses the backend, once it has
// recorded a task's end. It logs each Ack in steps.
type losingAcks struct {
	queue.Backend
	lose  atomic.Bool
	steps *steps
}

// steps is a log of what happened, in order.
type steps = seen[string]

func (b *losingAcks) Ack(ctx context.Context, l *queue.Lease) error {
	b.steps.add("ack")
	if b.lose.Load() {
		return fmt.Errorf("%w: acknowledgement lost on purpose", queue.ErrUnavailable)
	}
	return b.Backend.Ack(ctx, l)
}

func (b *losingAcks) Bury(ctx context.Context, l *queue.Lease, reason string) error {
	if b.lose.Load() {
		return fmt.Errorf("%w: burial lost on purpose", queue.ErrUnavailable)
	}
	return b.Backend.Bury(ctx, l, reason)
}

// registerUntilCancelled registers flow "wait", which runs until its
// context ends, and returns a channel closed as it starts.
func (h *harness) registerUntilCancelled() <-chan struct{} {
	started := make(chan struct{})
	h.reg.MustRegister("wait", flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	return started
}

// cancelRunning cancels task id once its flow has started (started is
// closed) and its start is recorded: a task still PENDING would be ended
// by Cancel itself, and its worker would find it ended.
func (h *harness) cancelRunning(id string, started <-chan struct{}) {
	h.t.Helper()
	waitFor(h.t, started, "the flow to start")
	eventually(h.t, func() bool { return h.snapshot(id).State == progress.StateProgress }, "the start was not recorded")
	require.NoError(h.t, h.broker.Cancel(context.Background(), id))
}

// runFinishHooks checks WorkerConfig.OnFinish: once per task that ends,
// after the end is recorded and before the task is acknowledged, on
// every path to an end.
func runFinishHooks(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("SuccessAndFailure", func(t *testing.T) {
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		h.reg.MustRegister("ok", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			if ft.Attempt == 1 {
				return nil, errors.New("try again")
			}
			ft.Progress.Log("second time lucky")
			return "fine", nil
		}))
		h.reg.MustRegister("boom", flow.Func(func(context.Context, *flow.Task) (any, error) {
			return nil, flow.Permanent(errors.New("broken"))
		}))
		h.start(queue.WorkerConfig{Name: "hooked", Concurrency: 1, OnFinish: []queue.FinishHook{rec.hook}})
		before := time.Now().UTC().Add(-time.Second)
		ok := h.enqueue("ok", `{"n":1}`, queue.EnqueueOptions{MaxAttempts: 2})
		boom := h.enqueue("boom", "", queue.EnqueueOptions{})

		calls := rec.waitCalls(t, ok, 1)
		h.settle()
		calls = rec.of(ok)
		require.Len(t, calls, 1, "one call per task, none for the failed attempt")
		c := calls[0]
		assert.Equal(t, progress.StateSuccess, c.stored, "called once the end is recorded")
		f := c.f
		assert.Equal(t, ok, f.Task.ID)
		assert.Equal(t, "ok", f.Task.Flow)
		assert.JSONEq(t, `{"n":1}`, string(f.Task.Inputs))
		assert.Equal(t, 2, f.Task.Attempt)
		assert.Equal(t, progress.StateSuccess, f.Snapshot.State)
		assert.JSONEq(t, `"fine"`, string(f.Snapshot.Details.FinalResult))
		assert.Contains(t, stepMessages(f.Snapshot), "second time lucky", "the final snapshot, steps included")
		assert.Equal(t, "hooked", f.Worker)
		assert.False(t, f.FoundEnded)
		assert.True(t, f.Task.EnqueuedAt.After(before), "EnqueuedAt %v", f.Task.EnqueuedAt)
		assert.False(t, f.StartedAt.Before(f.Task.EnqueuedAt.Truncate(time.Millisecond)), "StartedAt %v", f.StartedAt)
		assert.False(t, f.EndedAt.Before(f.StartedAt), "EndedAt %v", f.EndedAt)

		calls = rec.of(boom)
		require.Len(t, calls, 1)
		f = calls[0].f
		assert.Equal(t, progress.StateFailure, f.Snapshot.State)
		assert.Equal(t, "broken", f.Snapshot.Details.Status)
		assert.False(t, f.StartedAt.IsZero(), "the flow ran")
		assert.Equal(t, "broken", h.waitBuried(boom).Reason, "buried as without hooks")
		h.requireNotBuried(ok)
		requireNothingReady(t, h.backend)
	})

	t.Run("TasksThatNeverRan", func(t *testing.T) {
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		ran := h.registerCounting("fragile")
		ctx := context.Background()

		cancelled := h.enqueue("fragile", "", queue.EnqueueOptions{})
		require.NoError(t, h.broker.Cancel(ctx, cancelled))
		unknown := h.enqueueUnchecked("no-such-flow", "")
		spent := h.enqueue("fragile", "", queue.EnqueueOptions{MaxAttempts: 1})
		// A worker leases the first two tasks and the third and dies
		// without a word: the third has spent its one attempt.
		var lost []string
		for len(lost) < 3 {
			for _, l := range fetch(t, h.backend, 3-len(lost), 50*time.Millisecond) {
				lost = append(lost, l.Task.ID)
			}
		}
		require.ElementsMatch(t, []string{cancelled, unknown, spent}, lost)

		h.start(queue.WorkerConfig{Concurrency: 1, OnFinish: []queue.FinishHook{rec.hook}})
		for _, tc := range []struct {
			id, status string
			found      bool
		}{
			{cancelled, queue.StatusCancelled, true},
			{unknown, "no-such-flow", false},
			{spent, "gave up after 1 attempt: lease expired", false},
		} {
			calls := rec.waitCalls(t, tc.id, 1)
			require.Len(t, calls, 1)
			f := calls[0].f
			assert.Equal(t, progress.StateFailure, f.Snapshot.State)
			assert.Contains(t, f.Snapshot.Details.Status, tc.status)
			assert.True(t, f.StartedAt.IsZero(), "task %s did not run", tc.id)
			assert.Equal(t, tc.found, f.FoundEnded, "task %s", tc.id)
		}
		h.settle()
		assert.Zero(t, ran.Load())
		for _, id := range []string{cancelled, unknown, spent} {
			assert.Len(t, rec.of(id), 1, "task %s", id)
		}
		h.waitBuried(unknown)
		h.waitBuried(spent)
		h.requireNotBuried(cancelled)
		requireNothingReady(t, h.backend)
	})

	t.Run("CancelledWhileRunning", func(t *testing.T) {
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		started := h.registerUntilCancelled()
		h.start(queue.WorkerConfig{OnFinish: []queue.FinishHook{rec.hook}})
		id := h.enqueue("wait", "", queue.EnqueueOptions{})
		h.cancelRunning(id, started)
		f := rec.waitCalls(t, id, 1)[0].f
		assert.Equal(t, progress.StateFailure, f.Snapshot.State)
		assert.Equal(t, queue.StatusCancelled, f.Snapshot.Details.Status)
		assert.False(t, f.StartedAt.IsZero())
		assert.False(t, f.FoundEnded)
	})

	t.Run("RunAgainWhenTheAckIsLost", func(t *testing.T) {
		// The first worker records the end and runs its hooks, but its
		// acknowledgement never lands (it died, say): the task stays
		// leased, and the next worker to lease it runs the hooks again
		// before acknowledging it.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		ran := h.registerCounting("once")
		order := &steps{}
		losing := &losingAcks{Backend: h.backend, steps: order}
		losing.lose.Store(true)
		// The first worker stops as its hooks run, so that it does not
		// lease the task again itself: its one slot is busy until then.
		var first atomic.Pointer[runningWorker]
		stopFirst := func(context.Context, queue.Finished) error {
			order.add("hook")
			first.Load().cancel()
			return nil
		}
		first.Store(h.startOn(losing, queue.WorkerConfig{
			Name: "first", Concurrency: 1, Lease: time.Second, FinishHookTimeout: 500 * time.Millisecond,
			OnFinish: []queue.FinishHook{rec.hook, stopFirst},
		}))
		id := h.enqueue("once", "", queue.EnqueueOptions{})
		rec.waitCalls(t, id, 1)
		first.Load().wait()
		assert.Equal(t, []string{"hook", "ack"}, order.get(), "the hooks run before the acknowledgement")

		h.start(queue.WorkerConfig{Name: "second", Concurrency: 1, OnFinish: []queue.FinishHook{rec.hook}})
		calls := rec.waitCalls(t, id, 2)
		h.settle()
		require.Len(t, rec.of(id), 2)
		assert.Equal(t, "first", calls[0].f.Worker)
		assert.False(t, calls[0].f.FoundEnded)
		assert.Equal(t, "second", calls[1].f.Worker)
		assert.True(t, calls[1].f.FoundEnded)
		assert.Equal(t, 2, calls[1].f.Task.Attempt)
		assert.True(t, calls[1].f.StartedAt.IsZero())
		for _, c := range calls {
			assert.Equal(t, progress.StateSuccess, c.f.Snapshot.State)
			assert.JSONEq(t, `"ran"`, string(c.f.Snapshot.Details.FinalResult))
		}
		assert.Equal(t, int32(1), ran.Load(), "the flow is not run again")
		requireOneTerminalEvent(t, h, id)
		requireNothingReady(t, h.backend)
	})

	t.Run("RunAgainLater", func(t *testing.T) {
		// A hook that cannot do its work yet asks for the hooks to run
		// again: the task comes back, ended, to a later lease, which
		// calls the hooks again, until they do not ask. Neither its
		// attempts nor its hand-backs are spent by that.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		ran := h.registerCounting("once")
		h.reg.MustRegister("boom", flow.Func(func(context.Context, *flow.Task) (any, error) {
			return nil, flow.Permanent(errors.New("broken"))
		}))
		const asks = 3
		var asked sync.Map // task id -> *atomic.Int32
		later := func(_ context.Context, f queue.Finished) error {
			if f.Task.Flow == "settle-marker" {
				return nil
			}
			n, _ := asked.LoadOrStore(f.Task.ID, new(atomic.Int32))
			if n.(*atomic.Int32).Add(1) <= asks {
				return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
			}
			return nil
		}
		h.start(queue.WorkerConfig{
			Concurrency: 1, MaxHandBacks: 1,
			OnFinish: []queue.FinishHook{rec.hook, later},
		})
		ok := h.enqueue("once", "", queue.EnqueueOptions{MaxAttempts: 1})
		boom := h.enqueue("boom", "", queue.EnqueueOptions{MaxAttempts: 1})
		for _, tc := range []struct {
			id    string
			state progress.State
		}{{ok, progress.StateSuccess}, {boom, progress.StateFailure}} {
			calls := rec.waitCalls(t, tc.id, asks+1)
			require.Len(t, calls, asks+1, "task %s", tc.id)
			for i, c := range calls {
				assert.Equal(t, tc.state, c.stored, "call %d: the state is recorded from the first call on", i)
				assert.Equal(t, tc.state, c.f.Snapshot.State)
				assert.Equal(t, i > 0, c.f.FoundEnded, "call %d", i)
				assert.Equal(t, i > 0, c.f.StartedAt.IsZero(), "call %d: only the first call follows a run", i)
				assert.Equal(t, i, c.f.Task.HookRetries, "call %d", i)
				assert.Zero(t, c.f.Task.HandBacks, "call %d: hook retries are no hand-backs", i)
				want := 1
				if i > 0 {
					want = 2 // one more than the run that ended the task
				}
				assert.Equal(t, want, c.f.Task.Attempt, "call %d: the leases that ran the hooks again are left out", i)
			}
		}
		h.settle()
		assert.Len(t, rec.of(ok), asks+1, "no call once the hooks did not ask again")
		assert.Len(t, rec.of(boom), asks+1)
		assert.Equal(t, int32(1), ran.Load(), "the flow is not run again")
		snap := h.snapshot(ok)
		assert.Equal(t, progress.StateSuccess, snap.State)
		assert.JSONEq(t, `"ran"`, string(snap.Details.FinalResult))
		requireOneTerminalEvent(t, h, ok)
		requireOneTerminalEvent(t, h, boom)
		h.requireNotBuried(ok)
		dead := h.waitBuried(boom)
		assert.Equal(t, "broken", dead.Reason, "buried once its hooks are done, for its own reason")
		assert.Equal(t, 1, dead.Attempts, "the run of the flow, not the leases that ran the hooks again")
		assert.Equal(t, "broken", h.snapshot(boom).Details.Status)
		requireNothingReady(t, h.backend)
	})

	t.Run("RunAgainAfterTheBackoffWhenCancelled", func(t *testing.T) {
		// A task cancelled as it ran has ended: a hook that asks to run
		// again waits for the worker's backoff all the same, as for a
		// task that was not cancelled. Here the backoff of the first
		// hook retry is short, and of the second an hour.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		started := h.registerUntilCancelled()
		h.start(queue.WorkerConfig{
			Concurrency: 1, Backoff: hourFrom(2),
			OnFinish: []queue.FinishHook{rec.hook, func(_ context.Context, f queue.Finished) error {
				if f.Task.Flow != "wait" {
					return nil
				}
				return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
			}},
		})
		id := h.enqueue("wait", "", queue.EnqueueOptions{})
		h.cancelRunning(id, started)
		calls := rec.waitCalls(t, id, 2)
		assert.True(t, calls[1].f.FoundEnded)
		assert.True(t, calls[1].f.Task.Cancelled)
		eventually(t, func() bool {
			task, err := h.backend.Get(context.Background(), id)
			require.NoError(t, err)
			return task.HookRetries >= 2
		}, "the task was not given back a second time")
		h.settle()
		assert.Equal(t, 2, len(rec.of(id)), "calls: the hooks wait for the second backoff")
		task, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, 2, task.HookRetries)
		assert.Equal(t, queue.StatusCancelled, h.snapshot(id).Details.Status)
	})

	t.Run("RunAgainAsTimeEnds", func(t *testing.T) {
		// A hook that tries until the hooks' time is up and then asks
		// to run again, as it returns on its context's end, is heard.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		h.registerCounting("once")
		var calls atomic.Int32
		h.start(queue.WorkerConfig{
			Concurrency: 1, FinishHookTimeout: 50 * time.Millisecond,
			OnFinish: []queue.FinishHook{rec.hook, func(ctx context.Context, f queue.Finished) error {
				if f.Task.Flow != "once" || calls.Add(1) > 1 {
					return nil
				}
				<-ctx.Done()
				return fmt.Errorf("still away: %w", queue.ErrRetryHooks)
			}},
		})
		id := h.enqueue("once", "", queue.EnqueueOptions{})
		calls2 := rec.waitCalls(t, id, 2)
		assert.True(t, calls2[1].f.FoundEnded)
		h.settle()
		assert.Len(t, rec.of(id), 2)
		requireNothingReady(t, h.backend)
	})

	t.Run("RunAgainIsBounded", func(t *testing.T) {
		// Hooks that keep asking are given up on after MaxHookRetries:
		// the task is acknowledged (or buried) as it would have been.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		h.registerCounting("once")
		h.reg.MustRegister("boom", flow.Func(func(context.Context, *flow.Task) (any, error) {
			return nil, flow.Permanent(errors.New("broken"))
		}))
		const most = 2
		h.start(queue.WorkerConfig{
			Concurrency: 1, MaxHookRetries: most,
			OnFinish: []queue.FinishHook{rec.hook, func(_ context.Context, f queue.Finished) error {
				if f.Task.Flow == "settle-marker" {
					return nil
				}
				return queue.ErrRetryHooks
			}},
		})
		h.reg.MustRegister("twice", flow.Func(func(_ context.Context, t *flow.Task) (any, error) {
			if t.Attempt < 2 {
				return nil, errors.New("not yet")
			}
			return nil, flow.Permanent(errors.New("broken again"))
		}))
		ok := h.enqueue("once", "", queue.EnqueueOptions{})
		boom := h.enqueue("boom", "", queue.EnqueueOptions{})
		twice := h.enqueue("twice", "", queue.EnqueueOptions{MaxAttempts: 3})
		rec.waitCalls(t, ok, most+1)
		rec.waitCalls(t, boom, most+1)
		rec.waitCalls(t, twice, most+1)
		h.settle()
		assert.Len(t, rec.of(ok), most+1, "the first call and %d more", most)
		assert.Len(t, rec.of(boom), most+1)
		h.requireNotBuried(ok)
		dead := h.waitBuried(boom)
		assert.Equal(t, "broken", dead.Reason)
		assert.Equal(t, 1, dead.Attempts, "the run of the flow, not the leases that ran the hooks again")
		dead = h.waitBuried(twice)
		assert.Equal(t, "failed after 2 attempts: broken again", dead.Reason)
		assert.Equal(t, 2, dead.Attempts, "the two runs of the flow")
		assert.Equal(t, progress.StateSuccess, h.snapshot(ok).State)
		requireNothingReady(t, h.backend)
	})

	t.Run("ErrorsAndPanicsChangeNothing", func(t *testing.T) {
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		ran := h.registerCounting("fine")
		var failing, panicking atomic.Int32
		// The hooks count the calls for the flow under test only: the
		// settle marker's hooks may still be running when settle returns
		// (it waits for the marker's final snapshot, which precedes them).
		h.start(queue.WorkerConfig{Concurrency: 1, OnFinish: []queue.FinishHook{
			func(_ context.Context, f queue.Finished) error {
				if f.Task.Flow == "fine" {
					failing.Add(1)
				}
				return errors.New("hook failed")
			},
			func(_ context.Context, f queue.Finished) error {
				if f.Task.Flow == "fine" {
					panicking.Add(1)
				}
				panic("hook panicked")
			},
			rec.hook,
		}})
		id := h.enqueue("fine", "", queue.EnqueueOptions{})
		rec.waitCalls(t, id, 1)
		h.settle()
		assert.Len(t, rec.of(id), 1, "the hooks after a failing one are called")
		assert.Equal(t, int32(1), failing.Load(), "the failing hook, once for the task")
		assert.Equal(t, int32(1), panicking.Load(), "the panicking hook, once for the task")
		assert.Equal(t, int32(1), ran.Load(), "the task is not run again")
		snap := h.snapshot(id)
		assert.Equal(t, progress.StateSuccess, snap.State)
		requireOneTerminalEvent(t, h, id)
		h.requireNotBuried(id)
		requireNothingReady(t, h.backend)
	})

	t.Run("Timeout", func(t *testing.T) {
		h := newHarness(t, newBackends)
		base := h.goroutineBaseline()
		rec := newFinishes(h)
		h.registerCounting("fine")
		release := make(chan struct{})
		sawDeadline := make(chan error, 1)
		var after seen[string] // the flows of the tasks the last hook was called for
		w := h.start(queue.WorkerConfig{
			Concurrency: 1, FinishHookTimeout: 50 * time.Millisecond,
			OnFinish: []queue.FinishHook{
				rec.hook,
				func(ctx context.Context, f queue.Finished) error {
					if f.Task.Flow != "fine" {
						return nil
					}
					<-ctx.Done()
					sawDeadline <- ctx.Err()
					<-release // and ignores it
					return nil
				},
				func(_ context.Context, f queue.Finished) error {
					after.add(f.Task.Flow)
					return nil
				},
			},
		})
		id := h.enqueue("fine", "", queue.EnqueueOptions{})
		assert.ErrorIs(t, waitFor(t, sawDeadline, "the hook's context to end"), context.DeadlineExceeded)
		h.settle() // the worker went on without the hook
		require.Len(t, rec.of(id), 1)
		assert.Equal(t, progress.StateSuccess, h.snapshot(id).State)
		requireNothingReady(t, h.backend)
		close(release)
		w.stop()
		requireGoroutinesSettle(t, base)
		assert.NotContains(t, after.get(), "fine", "the hook after the late one is skipped")
	})

	t.Run("StoredSnapshotAndOwnHookList", func(t *testing.T) {
		// The hook gets the snapshot the store holds; the worker keeps
		// its own copy of the hook list.
		h := newHarness(t, newBackends)
		rec := newFinishes(h)
		h.registerCounting("fine")
		hooks := []queue.FinishHook{rec.hook}
		h.start(queue.WorkerConfig{Concurrency: 1, OnFinish: hooks})
		hooks[0] = func(context.Context, queue.Finished) error { panic("the worker kept the caller's slice") }
		id := h.enqueue("fine", "", queue.EnqueueOptions{})
		rec.waitCalls(t, id, 1)
		snap := h.waitTerminal(id)
		data, err := json.Marshal(rec.of(id)[0].f.Snapshot)
		require.NoError(t, err)
		want, err := json.Marshal(snap)
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(data), "the hook's snapshot is the stored one")
	})
}
