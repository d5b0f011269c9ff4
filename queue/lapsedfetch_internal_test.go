package queue

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// lapseBackend is a Memory that counts the Fetches started, and whose
// Retry does not answer while refuse is set (the backend cannot be
// reached).
type lapseBackend struct {
	*Memory
	fetches atomic.Int32
	refuse  atomic.Bool
	refused atomic.Int32
}

func (b *lapseBackend) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*Lease, error) {
	b.fetches.Add(1)
	return b.Memory.Fetch(ctx, worker, max, lease)
}

func (b *lapseBackend) Retry(ctx context.Context, l *Lease, at time.Time, why AttemptEnd) error {
	if b.refuse.Load() {
		b.refused.Add(1)
		return fmt.Errorf("cut off: %w", ErrUnavailable)
	}
	return b.Memory.Retry(ctx, l, at, why)
}

// TestLeasedWhileLapsedIsNotRun: a Fetch already waiting in the backend
// as the worker lapses may still lease a task (the worker checks its
// liveness before each Fetch, not during one). The worker does not run
// it: it hands it back at once, unrun (EndHandedBack, Lease.NoRun), and
// the task's next lease, once a heartbeat gets through, runs it as its
// first attempt, whatever made the worker lapse (heartbeats failing, or
// stalled, which would have counted the lease as an attempt). If the
// backend does not answer that hand-back, it is tried again once a
// heartbeat gets through. The test drives the worker's liveness: its
// heartbeats (one an hour) play no part after the first.
func TestLeasedWhileLapsedIsNotRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tries  int32 // heartbeats sent in the window (see liveness.cause)
		refuse bool  // the first hand-back does not get through
	}{
		{"heartbeats failing", MissedBeats - 1, false},
		{"heartbeats stalled", 0, false},
		{"hand-back not answered", MissedBeats - 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &lapseBackend{Memory: NewMemory(MemoryConfig{})}
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			reg := registry.New()
			var w *Worker
			var mu sync.Mutex
			var runs []string
			reg.MustRegister("quick", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
				mu.Lock()
				defer mu.Unlock()
				runs = append(runs, fmt.Sprintf("attempt %d, lapsed %t", ft.Attempt, w.live.lapsed()))
				return "done", nil
			}))
			w = NewWorker(b, store, WorkerConfig{
				Registry: reg, Heartbeat: time.Hour, Lease: time.Hour, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
			})
			runWorker(t, w)
			// The first heartbeat got through (a worker without one never
			// lapses), and the first Fetch waits for a task.
			require.Eventually(t, func() bool {
				return w.live.until.Load() != math.MaxInt64 && b.fetches.Load() == 1
			}, 10*time.Second, time.Millisecond, "no heartbeat, or no Fetch")

			// The worker lapses; its Fetch is still waiting, and leases
			// the task enqueued now.
			w.live.tries.Store(tc.tries)
			w.live.until.Store(-1)
			b.refuse.Store(tc.refuse)
			id, err := NewBroker(b, store, BrokerConfig{Registry: reg}).Enqueue(context.Background(), "quick", nil, EnqueueOptions{MaxAttempts: 1})
			require.NoError(t, err)
			get := func() *Task {
				task, err := b.Get(context.Background(), id)
				require.NoError(t, err)
				return task
			}
			if tc.refuse {
				require.Eventually(t, func() bool { return b.refused.Load() > 0 }, 10*time.Second, time.Millisecond,
					"the task was not handed back")
				assert.Zero(t, get().HandBacks, "the hand-back that did not get through")
				b.refuse.Store(false)
			} else {
				require.Eventually(t, func() bool { return get().PreviousEnd == EndHandedBack }, 10*time.Second, time.Millisecond,
					"the task was not handed back while the worker had lapsed")
			}
			mu.Lock()
			assert.Empty(t, runs, "the flow ran while the worker had lapsed")
			mu.Unlock()
			snap, _, err := store.Snapshot(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, progress.StatePending, snap.State, "the lease that did not run recorded no start")

			// A heartbeat gets through: the task runs, once.
			w.live.confirm(time.Now())
			deadline := time.Now().Add(10 * time.Second)
			for !snap.State.Terminal() {
				require.True(t, time.Now().Before(deadline), "task did not end: %+v", snap)
				time.Sleep(5 * time.Millisecond)
				snap, _, err = store.Snapshot(context.Background(), id)
				require.NoError(t, err)
			}
			assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
			mu.Lock()
			assert.Equal(t, []string{"attempt 2, lapsed false"}, runs)
			mu.Unlock()
			task := get()
			assert.Equal(t, 1, task.Attempts(), "attempts")
			assert.Equal(t, 1, task.NoRuns, "the lease that did not run")
			assert.Equal(t, 1, task.HandBacks, "its hand-back, not counted")
			var msgs []string
			for _, s := range snap.Details.StepResults {
				msgs = append(msgs, s.Message)
			}
			assert.True(t, slices.Contains(msgs, "attempt 2 of 2 starts: attempt 1 was handed back before it ran (not counted)"), "log %q", msgs)
		})
	}
}
