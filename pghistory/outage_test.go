package pghistory_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/pghistory/pgtest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// counts counts something per task id.
type counts struct{ m sync.Map }

func (c *counts) add(id string) {
	n, _ := c.m.LoadOrStore(id, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
}

func (c *counts) of(id string) int {
	if n, ok := c.m.Load(id); ok {
		return int(n.(*atomic.Int32).Load())
	}
	return 0
}

// TestHistoryOutlivesAnOutage: PostgreSQL stops for longer than the
// hooks' time while tasks end; the worker gives each ended task back for
// its hooks, again and again, and once the database is back every task
// has exactly one row, with the attempts of its runs, and no flow ran
// after its task ended. On both backends.
func TestHistoryOutlivesAnOutage(t *testing.T) {
	srv := pgtest.Start(t) // of its own: the test stops it
	for _, tc := range workerBackends {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openURL(t, srv.Database(t))
			qb, store := tc.make(t)
			var runs, retries counts
			reg := registry.New()
			reg.MustRegister("ok", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
				runs.add(ft.ID)
				return "done", nil
			}))
			reg.MustRegister("flaky", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
				runs.add(ft.ID)
				if ft.Attempt == 1 {
					return nil, errors.New("try again")
				}
				return "done", nil
			}))
			reg.MustRegister("fails", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
				runs.add(ft.ID)
				return nil, flow.Permanent(errors.New("nope"))
			}))
			hook := func(ctx context.Context, f queue.Finished) error {
				err := s.Hook(ctx, f)
				if errors.Is(err, queue.ErrRetryHooks) {
					retries.add(f.Task.ID)
				}
				return err
			}
			startWorker(t, qb, store, queue.WorkerConfig{
				Registry: reg, Name: "outage-worker", Concurrency: 4,
				Lease: 2 * time.Second, FinishHookTimeout: 150 * time.Millisecond,
				Backoff:  func(int) time.Duration { return 20 * time.Millisecond },
				OnFinish: []queue.FinishHook{hook}, Logger: slog.New(slog.DiscardHandler),
			})
			broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg})
			ctx := context.Background()

			require.NoError(t, srv.Halt())
			up := false
			t.Cleanup(func() { // before the database is dropped
				if !up {
					_ = srv.Resume()
				}
			})
			want := map[string]struct {
				state    progress.State
				attempts int
			}{}
			for _, f := range []struct {
				flow     string
				state    progress.State
				attempts int
			}{
				{"ok", progress.StateSuccess, 1}, {"ok", progress.StateSuccess, 1},
				{"flaky", progress.StateSuccess, 2}, {"fails", progress.StateFailure, 1},
			} {
				id, err := broker.Enqueue(ctx, f.flow, nil, queue.EnqueueOptions{MaxAttempts: 3})
				require.NoError(t, err)
				want[id] = struct {
					state    progress.State
					attempts int
				}{f.state, f.attempts}
			}
			// Each task's end is recorded at once, and its hooks give up
			// more than once while the database is away.
			deadline := time.Now().Add(20 * time.Second)
			for id, w := range want {
				for retries.of(id) < 2 {
					require.True(t, time.Now().Before(deadline), "task %s: hooks asked to run again %d times", id, retries.of(id))
					time.Sleep(10 * time.Millisecond)
				}
				info, err := broker.Task(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, w.state, info.Snapshot.State, "task %s ended while the database was away", id)
				_, err = s.Get(ctx, id)
				assert.Error(t, err, "no row yet")
			}

			require.NoError(t, srv.Resume())
			up = true
			for id, w := range want {
				r := waitRow(t, s, id)
				assert.Equal(t, w.state, r.State, "task %s", id)
				assert.Equal(t, w.attempts, r.Attempts, "task %s: the leases that only ran the hooks are not attempts", id)
				assert.Zero(t, r.HandBacks, "task %s", id)
				assert.Equal(t, w.attempts, runs.of(id), "task %s: no flow ran again after its task ended", id)
				info, err := broker.Task(ctx, id)
				require.NoError(t, err)
				// The history keeps times to the millisecond.
				assert.Equal(t, info.Snapshot.EndedAt.UnixMilli(), r.EndedAt.UnixMilli(),
					"task %s: the row's end is the task's, not when its hooks ran at last", id)
				assert.Equal(t, info.Snapshot.StartedAt.UnixMilli(), r.StartedAt.UnixMilli(), "task %s", id)
			}
			page, err := s.List(ctx, pghistory.Query{})
			require.NoError(t, err)
			assert.Len(t, page.Records, len(want), "exactly one row per task")

			// The tasks are acknowledged once their rows are written: the
			// queue empties, and the failure is buried once.
			depth := qb.(queue.DepthReader)
			require.Eventually(t, func() bool {
				d, err := depth.Depth(ctx)
				return err == nil && d.Ready+d.Delayed+d.Running == 0
			}, 20*time.Second, 10*time.Millisecond, "the queue did not empty")
			dead, err := broker.Dead(ctx, 0)
			require.NoError(t, err)
			require.Len(t, dead, 1)
			assert.Equal(t, "nope", dead[0].Reason)
			for id := range want {
				assert.Equal(t, want[id].attempts, runs.of(id), "task %s", id)
			}
		})
	}
}

// TestOutageHoldsOneSlot: while PostgreSQL is away, one Hook at a time
// waits for it through its FinishHookTimeout; the others ask at once to
// run again later, so that the worker's other slots go on running tasks.
// With hooks that may wait an hour, a worker of two slots runs six
// tasks to their end while the database is stopped (before, the first
// two tasks' hooks held both slots for the hour, and the other four
// waited for them); once it is back, every task has its one row.
func TestOutageHoldsOneSlot(t *testing.T) {
	srv := pgtest.Start(t) // of its own: the test stops it
	for _, tc := range workerBackends {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openURL(t, srv.Database(t))
			qb, store := tc.make(t)
			reg := testFlows()
			startWorker(t, qb, store, queue.WorkerConfig{
				Registry: reg, Name: "outage-worker", Concurrency: 2,
				Lease: 2 * time.Hour, FinishHookTimeout: time.Hour,
				Backoff:  func(int) time.Duration { return 20 * time.Millisecond },
				OnFinish: []queue.FinishHook{s.Hook}, Logger: slog.New(slog.DiscardHandler),
			})
			broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg})
			ctx := context.Background()

			require.NoError(t, srv.Halt())
			up := false
			t.Cleanup(func() { // before the database is dropped
				if !up {
					_ = srv.Resume()
				}
			})
			var ids []string
			for range 6 {
				id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
				require.NoError(t, err)
				ids = append(ids, id)
			}
			for _, id := range ids {
				require.Eventually(t, func() bool {
					info, err := broker.Task(ctx, id)
					return err == nil && info.Snapshot.State == progress.StateSuccess
				}, 30*time.Second, 10*time.Millisecond, "task %s did not run while the database was away", id)
			}

			require.NoError(t, srv.Resume())
			up = true
			for _, id := range ids {
				r := waitRow(t, s, id)
				assert.Equal(t, progress.StateSuccess, r.State, "task %s", id)
				assert.Equal(t, 1, r.Attempts, "task %s", id)
			}
			page, err := s.List(ctx, pghistory.Query{})
			require.NoError(t, err)
			assert.Len(t, page.Records, len(ids), "exactly one row per task")
		})
	}
}
