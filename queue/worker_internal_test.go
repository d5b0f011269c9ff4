package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// TestRecentCancellation: a cancellation heard for a task that is not
// running here (it was fetched before the cancellation and is about to
// start) cancels the run as soon as it is tracked, unless it is too old.
func TestRecentCancellation(t *testing.T) {
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler)})

	tests := []struct {
		name      string
		heard     time.Duration // how long before the run starts
		cancelled bool
	}{
		{"just now", 0, true},
		{"within the window", recentCancelWindow / 2, true},
		{"too long ago", 2 * recentCancelWindow, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := NewID()
			w.cancelActive(id)
			w.mu.Lock()
			w.recent[id] = w.recent[id].Add(-tt.heard)
			w.mu.Unlock()

			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			defer w.untrack(id, w.track(id, cancel))
			assert.Equal(t, tt.cancelled, ctx.Err() != nil)
			if tt.cancelled {
				assert.ErrorIs(t, context.Cause(ctx), errTaskCancelled)
			}
			w.mu.Lock()
			_, kept := w.recent[id]
			w.mu.Unlock()
			assert.False(t, kept, "a cancellation is used once")
		})
	}

	t.Run("a running task is cancelled, not remembered", func(t *testing.T) {
		id := NewID()
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		defer w.untrack(id, w.track(id, cancel))
		w.cancelActive(id)
		assert.ErrorIs(t, context.Cause(ctx), errTaskCancelled)
		w.mu.Lock()
		_, kept := w.recent[id]
		w.mu.Unlock()
		assert.False(t, kept)
	})

	t.Run("every run of a task is cancelled", func(t *testing.T) {
		id := NewID()
		var runs []*activeRun
		var ctxs []context.Context
		for range 3 {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			ctxs = append(ctxs, ctx)
			runs = append(runs, w.track(id, cancel))
		}
		w.untrack(id, runs[1]) // the middle one ends first
		w.cancelActive(id)
		assert.ErrorIs(t, context.Cause(ctxs[0]), errTaskCancelled)
		assert.NoError(t, ctxs[1].Err(), "no longer tracked")
		assert.ErrorIs(t, context.Cause(ctxs[2]), errTaskCancelled)
		w.untrack(id, runs[2])
		w.untrack(id, runs[0])
		w.mu.Lock()
		_, left := w.active[id]
		w.mu.Unlock()
		assert.False(t, left, "nothing left of the task once its runs end")
	})

	t.Run("old cancellations are forgotten", func(t *testing.T) {
		w.mu.Lock()
		for i := range maxRecentCancels {
			w.recent[NewID()] = time.Now().Add(-2*recentCancelWindow - time.Duration(i))
		}
		w.mu.Unlock()
		w.cancelActive(NewID())
		w.mu.Lock()
		defer w.mu.Unlock()
		assert.Len(t, w.recent, 1, "only the new one is kept")
	})
}

// TestResultBeforeCancellationStands: a flow that has returned its result
// before its context is cancelled succeeds, however late the worker
// receives the result.
func TestResultBeforeCancellationStands(t *testing.T) {
	mem := NewMemory(MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	reg := registry.New()
	reg.MustRegister("quick", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
	w := NewWorker(mem, store, WorkerConfig{Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	// The task is cancelled after the flow returned, before the worker
	// reads the outcome.
	w.flowReturned = w.cancelActive

	id, err := NewBroker(mem, store, BrokerConfig{Registry: reg}).Enqueue(context.Background(), "quick", nil, EnqueueOptions{})
	require.NoError(t, err)
	runWorker(t, w)

	deadline := time.Now().Add(10 * time.Second)
	for {
		snap, _, err := store.Snapshot(context.Background(), id)
		require.NoError(t, err)
		if snap.State.Terminal() {
			assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
			return
		}
		require.True(t, time.Now().Before(deadline), "task did not end: %+v", snap)
		time.Sleep(5 * time.Millisecond)
	}
}

// runWorker runs w until the test ends, then checks that Run returned nil
// within 10 s (the internal tests' twin of queue_test's runWorker).
func runWorker(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "Worker.Run")
		case <-time.After(10 * time.Second):
			t.Error("Worker.Run did not return")
		}
	})
}
