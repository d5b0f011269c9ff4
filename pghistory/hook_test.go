package pghistory_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// runWorker runs a worker that writes the history to s, until the test
// ends, and returns a broker on the same backend.
func runWorker(t *testing.T, qb queue.Backend, store progress.Store, s *pghistory.Store) *queue.Broker {
	t.Helper()
	reg := testFlows()
	startWorker(t, qb, store, queue.WorkerConfig{Registry: reg, Name: "history-worker", OnFinish: []queue.FinishHook{s.Hook}})
	return queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg})
}

// testFlows returns a registry of the flows the tests run: "ok" logs a
// step and succeeds, "fails" fails for good.
func testFlows() *registry.Registry {
	reg := registry.New()
	reg.MustRegister("ok", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Log("working")
		return map[string]int{"n": 1}, nil
	}))
	reg.MustRegister("fails", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		return nil, flow.Permanent(errors.New("nope"))
	}))
	return reg
}

// startWorker runs a worker with cfg until the test ends.
func startWorker(t *testing.T, qb queue.Backend, store progress.Store, cfg queue.WorkerConfig) {
	t.Helper()
	w := queue.NewWorker(qb, store, cfg)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// waitRow waits for task id's row.
func waitRow(t *testing.T, s *pghistory.Store, id string) pghistory.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := s.Get(context.Background(), id)
		if err == nil {
			return r
		}
		require.ErrorIs(t, err, pghistory.ErrNotFound)
		if time.Now().After(deadline) {
			require.FailNow(t, "no history row", "task %s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workerBackends are the backends the worker tests run on: the in-memory
// one with its store, and Redis (a server of the test's own), which is
// its own progress store (nil).
var workerBackends = []struct {
	name string
	make func(t *testing.T) (queue.Backend, progress.Store)
}{
	{"memory", func(t *testing.T) (queue.Backend, progress.Store) {
		return queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	}},
	{"redis", func(t *testing.T) (queue.Backend, progress.Store) {
		b, err := redisbackend.New(redistest.Start(t).Client(t), redisbackend.Config{})
		require.NoError(t, err)
		return b, nil
	}},
}

// TestWorkerWritesHistory: a worker with the Hook writes one row for each
// task it ends, on both backends: a success, a failure, and a task
// cancelled before it ran.
func TestWorkerWritesHistory(t *testing.T) {
	for _, tc := range workerBackends {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t)
			qb, store := tc.make(t)
			broker := runWorker(t, qb, store, s)
			ctx := context.Background()
			before := time.Now()

			okID, err := broker.Enqueue(ctx, "ok", json.RawMessage(`{"topic":"otters"}`), queue.EnqueueOptions{Owner: "alice"})
			require.NoError(t, err)
			failID, err := broker.Enqueue(ctx, "fails", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			cancelID, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
			require.NoError(t, err)
			require.NoError(t, broker.Cancel(ctx, cancelID))

			ok := waitRow(t, s, okID)
			assert.Equal(t, progress.StateSuccess, ok.State)
			assert.Equal(t, "ok", ok.Flow)
			assert.JSONEq(t, `{"topic":"otters"}`, string(ok.Inputs))
			assert.JSONEq(t, `{"n":1}`, string(ok.Snapshot.Details.FinalResult))
			require.Len(t, ok.Snapshot.Details.StepResults, 1)
			assert.Equal(t, progress.StepLog, ok.Snapshot.Details.StepResults[0].Type)
			assert.Equal(t, "working", ok.Snapshot.Details.StepResults[0].Message)
			assert.Equal(t, 1, ok.Attempts)
			assert.Equal(t, queue.DefaultMaxAttempts, ok.MaxAttempts)
			assert.Equal(t, "history-worker", ok.Worker)
			assert.Equal(t, "alice", ok.Owner, "the owner recorded at start")
			assert.False(t, ok.EnqueuedAt.Before(before.Truncate(time.Millisecond)), "the history keeps times to the millisecond")
			assert.False(t, ok.StartedAt.Before(ok.EnqueuedAt), "started %v, enqueued %v", ok.StartedAt, ok.EnqueuedAt)
			assert.False(t, ok.EndedAt.Before(ok.StartedAt))

			failed := waitRow(t, s, failID)
			assert.Equal(t, progress.StateFailure, failed.State)
			assert.Equal(t, "nope", failed.Status)
			assert.Equal(t, 1, failed.Attempts)

			cancelled := waitRow(t, s, cancelID)
			assert.Equal(t, progress.StateFailure, cancelled.State)
			assert.Equal(t, queue.StatusCancelled, cancelled.Status)
			assert.Equal(t, 0, cancelled.Attempts, "it never ran")
			assert.True(t, cancelled.StartedAt.IsZero())
			// The live views count as the row does once the worker has
			// let the task go (Task.NoRuns).
			require.Eventually(t, func() bool {
				live, err := qb.Get(ctx, cancelID)
				require.NoError(t, err)
				return live.Attempts() == cancelled.Attempts
			}, 20*time.Second, 10*time.Millisecond, "the live record counts the lease that dropped the task as a run")

			page, err := s.List(ctx, pghistory.Query{})
			require.NoError(t, err)
			assert.Len(t, page.Records, 3, "one row per task")
			mine, err := s.List(ctx, pghistory.Query{Owner: "alice"})
			require.NoError(t, err)
			require.Len(t, mine.Records, 1)
			assert.Equal(t, okID, mine.Records[0].TaskID)
		})
	}
}

// TestHistoryOutlivesRedis: a task's row stays in the history, and List
// finds it, after Redis has dropped the task at the end of its retention.
func TestHistoryOutlivesRedis(t *testing.T) {
	s, _ := open(t)
	b, err := redisbackend.New(redistest.Start(t).Client(t), redisbackend.Config{Retention: time.Second})
	require.NoError(t, err)
	broker := runWorker(t, b, nil, s)
	ctx := context.Background()
	id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	waitRow(t, s, id)

	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := broker.Task(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			break
		}
		require.NoError(t, err)
		require.True(t, time.Now().Before(deadline), "Redis still holds the task")
		time.Sleep(50 * time.Millisecond)
	}
	r, err := s.Get(ctx, id)
	require.NoError(t, err, "the history still has it")
	assert.Equal(t, progress.StateSuccess, r.State)
	page, err := s.List(ctx, pghistory.Query{Flow: "ok", State: progress.StateSuccess})
	require.NoError(t, err)
	require.Len(t, page.Records, 1)
	assert.Equal(t, id, page.Records[0].TaskID)
}

// refusingStore is a progress store that refuses its first Appends, as
// one that cannot be reached does: the worker hands the task back, and
// the hand-back spends no attempt.
type refusingStore struct {
	progress.Backend
	refusals atomic.Int32
}

func (s *refusingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	if s.refusals.Add(-1) >= 0 {
		return "", errors.New("pghistory test: the store is unavailable")
	}
	return s.Backend.Append(ctx, id, events...)
}

// TestWorkerWritesHandBacks: a task handed back twice (the progress store
// refused its first two runs) before it succeeded on its third run, of 2
// attempts, has its hand-backs in its row, and the listings return them:
// attempt 3 of 4 runs, not "3 of 2".
func TestWorkerWritesHandBacks(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T) (queue.Backend, progress.Backend)
	}{
		{"memory", func(t *testing.T) (queue.Backend, progress.Backend) {
			return queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
		}},
		{"redis", func(t *testing.T) (queue.Backend, progress.Backend) {
			b, err := redisbackend.New(redistest.Start(t).Client(t), redisbackend.Config{})
			require.NoError(t, err)
			return b, b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t)
			qb, store := tc.make(t)
			reg := testFlows()
			refusing := &refusingStore{Backend: store}
			refusing.refusals.Store(2)
			startWorker(t, qb, refusing, queue.WorkerConfig{
				Registry: reg, Name: "history-worker", OnFinish: []queue.FinishHook{s.Hook},
				Logger:  slog.New(slog.DiscardHandler),
				Backoff: func(int) time.Duration { return 10 * time.Millisecond },
			})
			broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg})
			ctx := context.Background()
			id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{MaxAttempts: 2})
			require.NoError(t, err)

			row := waitRow(t, s, id)
			assert.Equal(t, progress.StateSuccess, row.State, "status %q", row.Status)
			assert.Equal(t, 3, row.Attempts, "two runs handed back, then the one that succeeded")
			assert.Equal(t, 2, row.MaxAttempts)
			assert.Equal(t, 2, row.HandBacks, "the refused runs")

			page, err := s.List(ctx, pghistory.Query{})
			require.NoError(t, err)
			require.Len(t, page.Records, 1)
			assert.Equal(t, 2, page.Records[0].HandBacks)

			hist, err := s.ListHistory(ctx, queue.HistoryQuery{Before: time.Now().Add(time.Hour), Limit: 10})
			require.NoError(t, err)
			require.Len(t, hist.Tasks, 1)
			sum := hist.Tasks[0]
			assert.Equal(t, id, sum.ID)
			assert.Equal(t, 3, sum.Attempt)
			assert.Equal(t, 2, sum.HandBacks)
			assert.Equal(t, 4, sum.Runs(), "attempt 3 of 4 runs, as the live task reads")

			live, err := broker.Task(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, live.Task.HandBacks, sum.HandBacks, "the history says what the backend says")
		})
	}
}

// TestWorkerWritesResume: of two dead tasks, the one re-queued to resume
// (queue.RequeueOptions.Resume) has resume true in its row, the one
// re-queued plainly false, on both backends; the history's listing says
// what the live task says.
func TestWorkerWritesResume(t *testing.T) {
	for _, tc := range workerBackends {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t)
			qb, store := tc.make(t)
			broker := runWorker(t, qb, store, s)
			ctx := context.Background()

			var dead []string
			for range 2 {
				id, err := broker.Enqueue(ctx, "fails", nil, queue.EnqueueOptions{})
				require.NoError(t, err)
				row := waitRow(t, s, id)
				assert.False(t, row.Resume, "a task that was not re-queued")
				waitBuried(t, broker, id)
				dead = append(dead, id)
			}
			resumed, err := broker.RequeueWith(ctx, dead[0], queue.RequeueOptions{Resume: true})
			require.NoError(t, err)
			plain, err := broker.RequeueWith(ctx, dead[1], queue.RequeueOptions{})
			require.NoError(t, err)

			for _, want := range []struct {
				id, from string
				resume   bool
			}{{resumed, dead[0], true}, {plain, dead[1], false}} {
				row := waitRow(t, s, want.id)
				assert.Equal(t, want.from, row.RequeuedFrom)
				assert.Equal(t, want.resume, row.Resume, "task %s", want.id)
				live, err := broker.Task(ctx, want.id)
				require.NoError(t, err)
				require.NotNil(t, live.Task)
				assert.Equal(t, live.Task.Resume, row.Resume, "the history says what the backend says")
			}

			hist, err := s.ListHistory(ctx, queue.HistoryQuery{Before: time.Now().Add(time.Hour), Limit: 10})
			require.NoError(t, err)
			require.Len(t, hist.Tasks, 4)
			byID := map[string]queue.TaskSummary{}
			for _, sum := range hist.Tasks {
				byID[sum.ID] = sum
			}
			assert.True(t, byID[resumed].Resume, "the listing marks the resumed task")
			assert.Equal(t, dead[0], byID[resumed].RequeuedFrom)
			assert.False(t, byID[plain].Resume)
			assert.Equal(t, dead[1], byID[plain].RequeuedFrom)
		})
	}
}

// waitBuried waits for task id to be in the dead-letter set.
func waitBuried(t *testing.T, broker *queue.Broker, id string) {
	t.Helper()
	require.Eventually(t, func() bool {
		dead, err := broker.Dead(context.Background(), 100)
		require.NoError(t, err)
		for _, d := range dead {
			if d.ID == id {
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "task %s was not buried", id)
}

func TestRecordOf(t *testing.T) {
	snap := progress.Snapshot{State: progress.StateFailure, Details: progress.Details{Status: "Cancelled"}}
	task := &queue.Task{ID: "t1", Flow: "f", Attempt: 3, MaxAttempts: 5, HandBacks: 1, Inputs: json.RawMessage(`{}`),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", RequeuedFrom: "t0", Resume: true, Owner: "alice"}
	for _, tc := range []struct {
		name         string
		found        bool
		started      time.Time
		wantAttempts int
	}{
		{"ended by this lease's run", false, t0.Add(-time.Second), 3},
		{"ended by this lease without a run", false, time.Time{}, 2},
		{"found ended: the lease ran nothing", true, time.Time{}, 2},
		// The worker leaves the leases that only ran the hooks again out
		// of Task.Attempt (see queue.Finished): the third lease to run
		// them again is the fifth, and the task is given as attempt 3.
		{"found ended after hook retries", true, time.Time{}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := task
			if tc.name == "found ended after hook retries" {
				c := *task
				c.HookRetries = 3
				task = &c
			}
			r := pghistory.RecordOf(queue.Finished{Task: task, Snapshot: snap, Worker: "w", FoundEnded: tc.found,
				StartedAt: tc.started, EndedAt: t0})
			assert.Equal(t, tc.wantAttempts, r.Attempts)
			assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", r.TraceID)
			assert.Equal(t, "Cancelled", r.Status)
			assert.Equal(t, progress.StateFailure, r.State)
			assert.Equal(t, "t0", r.RequeuedFrom)
			assert.True(t, r.Resume)
			assert.Equal(t, "alice", r.Owner)
			assert.Equal(t, 5, r.MaxAttempts)
			assert.Equal(t, 1, r.HandBacks)
			assert.Equal(t, "w", r.Worker)
			assert.True(t, t0.Equal(r.EndedAt), "the snapshot has no times: the hook's")
			assert.True(t, tc.started.Equal(r.StartedAt))

			// The snapshot's times are the task's, whichever lease runs
			// the hooks: one that found the task ended (after a worker's
			// death, or the database away for hours) runs them later.
			timed := snap
			timed.StartedAt, timed.EndedAt = t0.Add(-time.Hour-time.Second), t0.Add(-time.Hour)
			r = pghistory.RecordOf(queue.Finished{Task: task, Snapshot: timed, Worker: "w", FoundEnded: tc.found,
				StartedAt: tc.started, EndedAt: t0})
			assert.True(t, timed.EndedAt.Equal(r.EndedAt), "ended at %v", r.EndedAt)
			assert.True(t, timed.StartedAt.Equal(r.StartedAt), "started at %v", r.StartedAt)
			assert.Equal(t, tc.wantAttempts, r.Attempts)
		})
	}
}
