package queuetest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runNoRuns checks that a lease that lets its task go without running its
// flow (Lease.NoRun) is no run in any view of the task: the backend
// counts it in Task.NoRuns as it acknowledges, buries or gives back the
// task, and the worker says so for each such lease, so that Get, the
// listing, TaskInfo and the dead-letter entry count the runs that the
// history of package pghistory records.
func runNoRuns(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("CountedByAckBuryAndRetry", func(t *testing.T) {
		b, _ := newBackends(t)
		ctx := context.Background()
		get := func(id string) *queue.Task {
			t.Helper()
			got, err := b.Get(ctx, id)
			require.NoError(t, err)
			return got
		}

		// Ack: a run given back, then a lease that ran nothing.
		acked := newTask()
		enqueue(t, b, acked)
		l := fetchOne(t, b, time.Minute)
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndFailed))
		l = fetchOne(t, b, time.Minute)
		l.NoRun = true
		require.NoError(t, b.Ack(ctx, l))
		got := get(acked.ID)
		assert.Equal(t, 2, got.Attempt)
		assert.Equal(t, 1, got.NoRuns)
		assert.Equal(t, 1, got.Attempts(), "the lease that ran nothing is no run")
		assert.ErrorIs(t, b.Ack(ctx, l), queue.ErrLeaseLost)
		assert.Equal(t, 1, get(acked.ID).NoRuns, "a lease is counted once")

		// Bury: the dead entry leaves the lease out.
		buried := newTask()
		enqueue(t, b, buried)
		l = fetchOne(t, b, time.Minute)
		l.NoRun = true
		require.NoError(t, b.Bury(ctx, l, "unknown flow"))
		got = get(buried.ID)
		assert.Equal(t, 1, got.NoRuns)
		assert.Zero(t, got.Attempts())
		var dead *queue.DeadTask
		for _, d := range fetchDead(t, b) {
			if d.ID == buried.ID {
				dead = &d
			}
		}
		require.NotNil(t, dead, "buried")
		assert.Zero(t, dead.Attempts, "the dead entry counts the runs")

		// Retry for the hooks: the lease after it is a hook re-run.
		hooks := newTask()
		enqueue(t, b, hooks)
		l = fetchOne(t, b, time.Minute)
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndFailed))
		l = fetchOne(t, b, time.Minute)
		l.NoRun = true
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndHooksPending))
		got = get(hooks.ID)
		assert.Equal(t, 1, got.NoRuns)
		assert.True(t, got.HooksDue)
		assert.Equal(t, 1, got.Attempts(), "waiting to run its hooks again")
		l = fetchOne(t, b, time.Minute)
		assert.Equal(t, 1, l.Task.NoRuns, "the lease reads NoRuns")
		assert.Equal(t, 1, l.Task.Attempts())
		require.NoError(t, b.Ack(ctx, l))
		assert.Equal(t, 1, get(hooks.ID).Attempts())
	})

	t.Run("NotCountedForALeaseTakenOver", func(t *testing.T) {
		b, _ := newBackends(t)
		ctx := context.Background()
		task := newTask()
		enqueue(t, b, task)
		stale := fetchOne(t, b, 20*time.Millisecond)
		current := fetchOne(t, b, time.Minute)
		require.Equal(t, task.ID, current.Task.ID)
		stale.NoRun = true
		assert.ErrorIs(t, b.Ack(ctx, stale), queue.ErrLeaseLost)
		assert.ErrorIs(t, b.Bury(ctx, stale, "gave up"), queue.ErrLeaseLost)
		assert.ErrorIs(t, b.Retry(ctx, stale, time.Now(), queue.EndHooksPending), queue.ErrLeaseLost)
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Zero(t, got.NoRuns, "a stale lease counted")
		assert.Equal(t, 2, got.Attempts())
		require.NoError(t, b.Ack(ctx, current))
	})

	// Each case leaves task id ended, with want runs of its flow.
	for _, tc := range []struct {
		name   string
		buried bool
		want   int
		// again is how many times the hooks ask to run again.
		again int32
		// status, when set, is the task's status and its dead letter's
		// reason, which count the runs as the views do.
		status string
		setup  func(t *testing.T, h *harness) (id string, cfg queue.WorkerConfig)
	}{
		{name: "Ran", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			return h.enqueue("runs", "", queue.EnqueueOptions{}), queue.WorkerConfig{}
		}},
		{name: "WorkerLostOnItsLastAttempt", buried: true, want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			id := h.enqueue("runs", "", queue.EnqueueOptions{MaxAttempts: 1})
			// A worker leases the task and dies without a word: the next
			// lease finds its attempts spent.
			fetchOne(t, h.backend, 50*time.Millisecond)
			return id, queue.WorkerConfig{}
		}},
		{name: "CancelledWhileWaitingToRetry", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.reg.MustRegister("flaky", flow.Func(func(context.Context, *flow.Task) (any, error) {
				return nil, errors.New("upstream down")
			}))
			id := h.enqueue("flaky", "", queue.EnqueueOptions{MaxAttempts: 3})
			// Its first run fails, and it waits an hour for the next.
			w := h.start(queue.WorkerConfig{Concurrency: 1, Backoff: func(int) time.Duration { return time.Hour }})
			eventually(t, func() bool { return len(stepMessages(h.snapshot(id))) == 1 }, "first attempt did not fail")
			w.stop()
			require.NoError(t, h.broker.Cancel(context.Background(), id))
			return id, queue.WorkerConfig{}
		}},
		{name: "CancelledWhilePending", want: 0, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			id := h.enqueue("runs", "", queue.EnqueueOptions{})
			require.NoError(t, h.broker.Cancel(context.Background(), id))
			return id, queue.WorkerConfig{}
		}},
		{name: "FoundEnded", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			return endedByALostWorker(t, h), queue.WorkerConfig{}
		}},
		{name: "FoundEndedHooksAgain", want: 1, again: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			return endedByALostWorker(t, h), queue.WorkerConfig{}
		}},
		{name: "FailedAfterALeaseThatDidNotRun", buried: true, want: 2, status: "failed after 2 attempts: upstream down", setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.reg.MustRegister("down", flow.Func(func(context.Context, *flow.Task) (any, error) {
				return nil, errors.New("upstream down")
			}))
			id := h.enqueue("down", "", queue.EnqueueOptions{MaxAttempts: 2})
			handedBackUnrun(t, h, id) // then both attempts run and fail
			return id, queue.WorkerConfig{Backoff: func(int) time.Duration { return 0 }}
		}},
		{name: "RanAfterALeaseThatDidNotRun", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			id := h.enqueue("runs", "", queue.EnqueueOptions{})
			handedBackUnrun(t, h, id)
			return id, queue.WorkerConfig{}
		}},
		{name: "FoundEndedAfterALeaseThatDidNotRun", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			id := h.enqueue("runs", "", queue.EnqueueOptions{})
			handedBackUnrun(t, h, id)
			endOnALostLease(t, h, id)
			return id, queue.WorkerConfig{}
		}},
		{name: "FoundEndedAfterHooksLeaseHandedBack", want: 1, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			h.registerCounting("runs")
			id := endedByALostWorker(t, h)
			// A worker finds it ended and its hooks ask to run again; the
			// lease that would run them is handed back before it does.
			l := fetchOne(t, h.backend, time.Minute)
			require.Equal(t, id, l.Task.ID)
			l.NoRun = true
			require.NoError(t, h.backend.Retry(context.Background(), l, time.Now(), queue.EndHooksPending))
			l = fetchOne(t, h.backend, time.Minute)
			require.Equal(t, id, l.Task.ID)
			require.NoError(t, h.backend.Retry(context.Background(), l, time.Now(), queue.EndHandedBack))
			return id, queue.WorkerConfig{}
		}},
		{name: "UnknownFlow", buried: true, want: 0, setup: func(t *testing.T, h *harness) (string, queue.WorkerConfig) {
			return h.enqueueUnchecked("no-such-flow", ""), queue.WorkerConfig{}
		}},
	} {
		t.Run("EveryViewCounts/"+tc.name, func(t *testing.T) {
			h := newHarness(t, newBackends)
			id, cfg := tc.setup(t, h)
			rec := newFinishes(h)
			var again atomic.Int32
			again.Store(tc.again)
			cfg.Concurrency = 1
			cfg.OnFinish = []queue.FinishHook{rec.hook, func(_ context.Context, f queue.Finished) error {
				if f.Task.ID == id && again.Add(-1) >= 0 {
					return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
				}
				return nil
			}}
			h.start(cfg)
			calls := rec.waitCalls(t, id, int(tc.again)+1)
			// One slot: the worker is done with the task before it takes
			// the marker.
			h.settle()
			h.requireRuns(id, tc.want, tc.buried, calls[len(calls)-1].f.Attempts())
			if tc.status != "" {
				assert.Equal(t, tc.status, h.snapshot(id).Details.Status, "the status")
				assert.Equal(t, tc.status, h.waitBuried(id).Reason, "the dead letter's reason")
			}
		})
	}
}

// handedBackUnrun leases task id and hands it back before it ran, as a
// worker does with a task leased beyond what it asked for or while its
// heartbeats had lapsed (EndHandedBack, Lease.NoRun).
func handedBackUnrun(t *testing.T, h *harness, id string) {
	t.Helper()
	l := fetchOne(t, h.backend, time.Minute)
	require.Equal(t, id, l.Task.ID)
	l.NoRun = true
	require.NoError(t, h.backend.Retry(context.Background(), l, time.Now(), queue.EndHandedBack))
}

// endedByALostWorker enqueues a task of the flow "runs" and has a worker
// lease it, record its SUCCESS and die before acknowledging it, and
// returns its id: the next lease finds it ended.
func endedByALostWorker(t *testing.T, h *harness) string {
	t.Helper()
	id := h.enqueue("runs", "", queue.EnqueueOptions{})
	endOnALostLease(t, h, id)
	return id
}

// endOnALostLease has a worker lease task id of the flow "runs", record
// its SUCCESS and die before acknowledging it: the next lease finds it
// ended.
func endOnALostLease(t *testing.T, h *harness, id string) {
	t.Helper()
	l := fetchOne(t, h.backend, 50*time.Millisecond)
	require.Equal(t, id, l.Task.ID)
	_, err := h.store.Append(context.Background(), id,
		progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"},
		progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: []byte(`"done"`)})
	require.NoError(t, err)
}

// requireRuns checks that every view of task id counts want runs of its
// flow: Get, the Inspector's TaskInfo and listing, its dead-letter entry
// when buried is set, and history, what the history records.
func (h *harness) requireRuns(id string, want int, buried bool, history int) {
	t := h.t
	t.Helper()
	ctx := context.Background()
	got, err := h.backend.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, want, got.Attempts(), "Get: attempt %d, hook retries %d, no runs %d", got.Attempt, got.HookRetries, got.NoRuns)
	assert.False(t, got.HooksDue)
	in := h.inspector()
	info, err := in.Task(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, info.Task)
	assert.Equal(t, want, info.Task.Attempts(), "TaskInfo")
	listed := false
	for _, s := range listAll(t, in, queue.ListOptions{}) {
		if s.ID == id {
			listed = true
			assert.Equal(t, want, s.Attempt, "listing")
		}
	}
	assert.True(t, listed, "task %s is not listed", id)
	if buried {
		assert.Equal(t, want, h.waitBuried(id).Attempts, "dead-letter entry")
	} else {
		h.requireNotBuried(id)
	}
	assert.Equal(t, want, history, "the history")
}
