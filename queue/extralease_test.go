package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

// overLeaser is a Backend whose next Fetch, once over is set, leases one
// task more than asked for, with the lease of task extra last (the one
// the worker hands back). While gate is set, Fetch waits for it to close
// first. It records the tasks acknowledged.
type overLeaser struct {
	queue.Backend
	mu     sync.Mutex
	gate   chan struct{}
	over   bool
	extra  string
	leased int // how many tasks the over-leasing Fetch leased
	acked  []string
}

func (b *overLeaser) setGate(g chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gate = g
}

func (b *overLeaser) overLease(extra string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.over, b.extra = true, extra
}

func (b *overLeaser) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b.mu.Lock()
	over, extra := b.over, b.extra
	b.over = false
	b.mu.Unlock()
	if !over {
		return b.Backend.Fetch(ctx, worker, max, lease)
	}
	leases, err := b.Backend.Fetch(ctx, worker, max+1, lease)
	slices.SortStableFunc(leases, func(x, y *queue.Lease) int {
		switch {
		case x.Task.ID == extra && y.Task.ID != extra:
			return 1
		case x.Task.ID != extra && y.Task.ID == extra:
			return -1
		}
		return 0
	})
	b.mu.Lock()
	b.leased = len(leases)
	b.mu.Unlock()
	return leases, err
}

func (b *overLeaser) Ack(ctx context.Context, l *queue.Lease) error {
	err := b.Backend.Ack(ctx, l)
	if err == nil {
		b.mu.Lock()
		b.acked = append(b.acked, l.Task.ID)
		b.mu.Unlock()
	}
	return err
}

func (b *overLeaser) isAcked(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Contains(b.acked, id)
}

func (b *overLeaser) overLeased() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leased
}

// TestExtraLeaseIsHandedBackUnrun: a task a backend leases beyond what
// the worker asked for is handed back unrun (EndHandedBack, Lease.NoRun),
// as one leased while the worker has lapsed: its lease is no attempt
// (Task.Attempts, the listing's attempt), and its log says it did not
// count. A lease that only runs the task's finish hooks again
// (HookRetries counts it) is not counted twice.
func TestExtraLeaseIsHandedBackUnrun(t *testing.T) {
	t.Run("Run", func(t *testing.T) {
		s := newSetup()
		s.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil }))
		b := &overLeaser{Backend: s.mem}
		first := s.enqueue(t, "ok", queue.EnqueueOptions{MaxAttempts: 1})
		extra := s.enqueue(t, "ok", queue.EnqueueOptions{MaxAttempts: 1})
		b.overLease(extra)
		runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
			Registry: s.reg, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
		}))

		assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, first).State)
		snap := waitTerminal(t, s.store, extra)
		require.Equal(t, 2, b.overLeased(), "the backend did not lease one task too many")
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		require.Eventually(t, func() bool { return b.isAcked(extra) }, waitLong, 5*time.Millisecond)
		task, err := s.mem.Get(context.Background(), extra)
		require.NoError(t, err)
		assert.Equal(t, 2, task.Attempt, "leases")
		assert.Equal(t, 1, task.Attempts(), "attempts: the extra lease is none")
		assert.Equal(t, 1, task.NoRuns, "the lease that did not run")
		assert.Equal(t, 1, task.HandBacks, "its hand-back, not counted")
		var msgs []string
		for _, e := range snap.Details.StepResults {
			msgs = append(msgs, e.Message)
		}
		assert.Contains(t, msgs, "attempt 2 of 2 starts: attempt 1 was handed back before it ran (not counted)")
	})

	// The status of a task whose flow failed on its every attempt counts
	// the runs of its flow, as its dead letter does, not the lease that
	// did not run it.
	t.Run("Failed", func(t *testing.T) {
		s := newSetup()
		s.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil }))
		s.reg.MustRegister("fails", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, errors.New("provider down") }))
		b := &overLeaser{Backend: s.mem}
		first := s.enqueue(t, "ok", queue.EnqueueOptions{MaxAttempts: 1})
		extra := s.enqueue(t, "fails", queue.EnqueueOptions{MaxAttempts: 2})
		b.overLease(extra)
		runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
			Registry: s.reg, Concurrency: 1, Backoff: func(int) time.Duration { return 0 },
			Logger: slog.New(slog.DiscardHandler),
		}))

		assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, first).State)
		snap := waitTerminal(t, s.store, extra)
		require.Equal(t, 2, b.overLeased(), "the backend did not lease one task too many")
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "failed after 2 attempts: provider down", snap.Details.Status, "the lease that did not run the flow is no attempt")
		var dead []queue.DeadTask
		require.Eventually(t, func() bool {
			var err error
			dead, err = s.broker.Dead(context.Background(), 0)
			require.NoError(t, err)
			return len(dead) == 1
		}, waitLong, 5*time.Millisecond, "the task was not buried")
		assert.Equal(t, "failed after 2 attempts: provider down", dead[0].Reason)
		assert.Equal(t, 2, dead[0].Attempts)
		task, err := s.mem.Get(context.Background(), extra)
		require.NoError(t, err)
		assert.Equal(t, 3, task.Attempt, "leases: the extra, then two runs")
		assert.Equal(t, 1, task.NoRuns)
	})

	t.Run("HooksAgain", func(t *testing.T) {
		s := newSetup()
		started, proceed := make(chan struct{}), make(chan struct{})
		s.reg.MustRegister("once", flow.Func(func(context.Context, *flow.Task) (any, error) {
			close(started)
			<-proceed
			return "ran", nil
		}))
		s.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil }))
		var calls atomic.Int32
		var mu sync.Mutex
		var attempts []int // Finished.Attempts of each call for "once"
		hook := func(_ context.Context, f queue.Finished) error {
			if f.Task.Flow != "once" {
				return nil
			}
			mu.Lock()
			attempts = append(attempts, f.Attempts())
			mu.Unlock()
			if calls.Add(1) == 1 {
				return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
			}
			return nil
		}
		b := &overLeaser{Backend: s.mem}
		runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
			Registry: s.reg, Concurrency: 1, Backoff: func(int) time.Duration { return 0 },
			OnFinish: []queue.FinishHook{hook}, Logger: slog.New(slog.DiscardHandler),
		}))
		id := s.enqueue(t, "once", queue.EnqueueOptions{MaxAttempts: 1})
		select {
		case <-started:
		case <-time.After(waitLong):
			require.FailNow(t, "flow did not start")
		}
		// The worker's one slot is taken: it fetches again once the task
		// has been given back for its hooks, and then waits at the gate.
		gate := make(chan struct{})
		b.setGate(gate)
		close(proceed)
		require.Eventually(t, func() bool {
			task, err := s.mem.Get(context.Background(), id)
			require.NoError(t, err)
			return task.HooksDue
		}, waitLong, 5*time.Millisecond, "the task was not given back for its hooks")
		other := s.enqueue(t, "ok", queue.EnqueueOptions{MaxAttempts: 1})
		b.overLease(id)
		close(gate)

		assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, other).State)
		require.Eventually(t, func() bool { return b.isAcked(id) }, waitLong, 5*time.Millisecond)
		require.Equal(t, 2, b.overLeased(), "the backend did not lease one task too many")
		assert.Equal(t, int32(2), calls.Load(), "hook calls")
		task, err := s.mem.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, 3, task.Attempt, "leases: the run, the extra, the hooks' run")
		assert.Equal(t, 1, task.HookRetries)
		assert.Equal(t, 1, task.HandBacks)
		assert.Equal(t, 1, task.Attempts(), "attempts: the run of the flow only")
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []int{1, 1}, attempts, "the hooks count the run of the flow only, not the lease handed back nor the one that ran them again")
	})
}
