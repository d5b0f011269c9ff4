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
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// lapseBackend is a Memory that counts the Fetches started, and whose
// Retry does not answer while refuse is set (the backend cannot be
// reached), nor Heartbeat while cut is set. A Fetch that leases while
// held is set returns once held is closed: its reply is read late. Its
// cancellation feed delivers nothing: the worker learns of a
// cancellation from Extend. The test's other workers call the Memory
// itself.
type lapseBackend struct {
	*Memory
	fetches atomic.Int32
	refuse  atomic.Bool
	refused atomic.Int32
	cut     atomic.Bool
	held    atomic.Pointer[chan struct{}]
}

func (b *lapseBackend) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*Lease, error) {
	b.fetches.Add(1)
	leases, err := b.Memory.Fetch(ctx, worker, max, lease)
	if held := b.held.Load(); held != nil && len(leases) > 0 {
		<-*held
	}
	return leases, err
}

func (b *lapseBackend) Cancellations(ctx context.Context) (<-chan string, error) {
	ch := make(chan string)
	context.AfterFunc(ctx, func() { close(ch) })
	return ch, nil
}

func (b *lapseBackend) Heartbeat(ctx context.Context, w WorkerInfo) error {
	if b.cut.Load() {
		return fmt.Errorf("cut off: %w", ErrUnavailable)
	}
	return b.Memory.Heartbeat(ctx, w)
}

func (b *lapseBackend) Retry(ctx context.Context, l *Lease, at time.Time, why AttemptEnd) error {
	if b.refuse.Load() {
		b.refused.Add(1)
		return fmt.Errorf("cut off: %w", ErrUnavailable)
	}
	return b.Memory.Retry(ctx, l, at, why)
}

// lapsedWorker is a worker of flow "quick" on a lapseBackend, with
// intervals of an hour, leases of lease and a shutdown grace of a
// minute, whose first heartbeat got through; runs lists the runs of the
// flow, as "attempt n, lapsed b".
type lapsedWorker struct {
	*Worker
	b     *lapseBackend
	store *progress.MemoryStore
	reg   *registry.Registry
	// stop stops the worker, and waits for Run to return.
	stop func()

	mu   sync.Mutex
	runs []string
}

// startLapsed starts a lapsedWorker in the caller's synctest bubble, and
// waits for its first heartbeat and for its first Fetch to wait for a
// task. Then it lapses, with tries heartbeats sent in its window (see
// liveness.cause): from the time of its liveness's epoch on, so that it
// may wait for a heartbeat to get through for a quarter of an interval
// from then (see liveness.awaitContactInTime).
func startLapsed(t *testing.T, lease time.Duration, tries int32) *lapsedWorker {
	t.Helper()
	w := &lapsedWorker{
		b:     &lapseBackend{Memory: NewMemory(MemoryConfig{})},
		store: progress.NewMemoryStore(progress.MemoryConfig{}),
		reg:   registry.New(),
	}
	w.reg.MustRegister("quick", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.runs = append(w.runs, fmt.Sprintf("attempt %d, lapsed %t", ft.Attempt, w.live.lapsed()))
		return "done", nil
	}))
	w.Worker = NewWorker(w.b, w.store, WorkerConfig{
		Registry: w.reg, Heartbeat: time.Hour, Lease: lease, ShutdownGrace: time.Minute, Concurrency: 1,
		Logger: slog.New(slog.DiscardHandler),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			assert.NoError(t, <-done, "Worker.Run")
		})
	}
	t.Cleanup(w.stop)
	synctest.Wait()
	require.NotEqual(t, int64(math.MaxInt64), w.live.until.Load(), "no heartbeat got through")
	require.EqualValues(t, 1, w.b.fetches.Load(), "no Fetch waits")
	w.live.tries.Store(tries)
	w.live.until.Store(0)
	return w
}

// enqueue enqueues a task of flow "quick" and waits until the worker is
// idle again: the Fetch waiting since before the lapse leased it.
func (w *lapsedWorker) enqueue(t *testing.T, maxAttempts int) string {
	t.Helper()
	id, err := NewBroker(w.b, w.store, BrokerConfig{Registry: w.reg}).Enqueue(context.Background(), "quick", nil,
		EnqueueOptions{MaxAttempts: maxAttempts})
	require.NoError(t, err)
	synctest.Wait()
	require.GreaterOrEqual(t, w.get(t, id).Attempt, 1, "the Fetch waiting at the lapse did not lease the task")
	return id
}

func (w *lapsedWorker) get(t *testing.T, id string) *Task {
	t.Helper()
	task, err := w.b.Get(context.Background(), id)
	require.NoError(t, err)
	return task
}

func (w *lapsedWorker) ran() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.runs)
}

// back has a heartbeat get through, and waits until the worker is idle
// again; the task id then has ended.
func (w *lapsedWorker) back(t *testing.T, id string) progress.Snapshot {
	t.Helper()
	w.live.confirm(time.Now())
	synctest.Wait()
	snap, _, err := w.store.Snapshot(context.Background(), id)
	require.NoError(t, err)
	require.True(t, snap.State.Terminal(), "the task did not end: %+v", snap)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	return snap
}

// TestLeasedWhileLapsed: a Fetch already waiting in the backend as the
// worker lapses may still lease a task (the worker checks its liveness
// before each Fetch, not during one). The worker does not run it while
// it has lapsed: it waits for a heartbeat to get through, for as long as
// it could still hand the task back before another worker may take its
// lease back as "worker lost" (a quarter of an interval past the lapse),
// or its lease ends.
// Each case runs in a synctest bubble, whose clock moves only when every
// goroutine waits; the test drives the worker's liveness, and its
// heartbeats (one an hour) play no part after the first.
func TestLeasedWhileLapsed(t *testing.T) {
	// A heartbeat gets through in time: Extend finds the lease still the
	// worker's, and the task runs once, as its first attempt, with no
	// hand-back, whatever made the worker lapse (heartbeats failing, or
	// stalled).
	for _, tc := range []struct {
		name  string
		tries int32
	}{
		{"back in time, heartbeats failing", MissedBeats - 1},
		{"back in time, heartbeats stalled", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := startLapsed(t, time.Hour, tc.tries)
				id := w.enqueue(t, 1)
				assert.Empty(t, w.ran(), "the flow ran while the worker had lapsed")
				assert.Empty(t, w.get(t, id).PreviousEnd, "the task was handed back while the worker waited")

				w.back(t, id)
				assert.Equal(t, []string{"attempt 1, lapsed false"}, w.ran())
				task := w.get(t, id)
				assert.Equal(t, 1, task.Attempt, "leases")
				assert.Zero(t, task.HandBacks, "hand-backs")
				assert.Zero(t, task.NoRuns, "leases that did not run")
			})
		})
	}

	// The lease would pass before a quarter of an interval (a Lease
	// shorter than the wait; nothing makes it longer than the
	// Heartbeat): the worker hands the task back unrun before the lease
	// ends, as "handed back", not counted, where another worker would
	// have taken it over once it passed, as "lease expired", an attempt
	// counted that never ran. Its next lease runs it.
	t.Run("lease shorter than the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const lease = time.Minute
			require.Less(t, lease, time.Hour/4, "the lease outlasts the wait")
			w := startLapsed(t, lease, MissedBeats-1)
			id := w.enqueue(t, 1)
			assert.Empty(t, w.get(t, id).PreviousEnd, "handed back at once")
			time.Sleep(lease - time.Second)
			synctest.Wait()
			task := w.get(t, id)
			require.Equal(t, EndHandedBack, task.PreviousEnd, "the task was not handed back before its lease ended")
			assert.Equal(t, 1, task.NoRuns, "the lease that did not run")
			assert.Equal(t, 1, task.HandBacks, "its hand-back, not counted")
			assert.Zero(t, task.Attempts(), "attempts")
			assert.Empty(t, w.ran(), "the flow ran while the worker had lapsed")

			w.back(t, id)
			assert.Equal(t, []string{"attempt 2, lapsed false"}, w.ran())
			assert.Equal(t, 1, w.get(t, id).Attempts(), "attempts")
		})
	})

	// The task is cancelled while its lease waits: once a heartbeat gets
	// through, the Extend that finds the lease held says so (the worker
	// missed the cancellation on its feed), and the task ends cancelled,
	// without running, nor being handed back.
	t.Run("cancelled meanwhile", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := startLapsed(t, time.Hour, MissedBeats-1)
			id := w.enqueue(t, 1)
			// The backend's flag alone, as Broker.Cancel sets it for a
			// task whose state is not PENDING (an earlier attempt ran):
			// the end is the worker's to record.
			require.NoError(t, w.b.Cancel(context.Background(), id))
			synctest.Wait()
			assert.Empty(t, w.ran(), "the flow ran while the worker had lapsed")

			w.live.confirm(time.Now())
			synctest.Wait()
			snap, _, err := w.store.Snapshot(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, progress.StateFailure, snap.State, "state")
			assert.Equal(t, StatusCancelled, snap.Details.Status, "status")
			assert.Empty(t, w.ran(), "the cancelled task ran")
			task := w.get(t, id)
			assert.NotEqual(t, EndHandedBack, task.PreviousEnd, "the cancelled task was handed back")
			assert.Zero(t, task.HandBacks, "hand-backs")
			assert.Equal(t, 1, task.Attempt, "leases")
		})
	})

	// The Fetch's reply is read late (a loaded host): meanwhile another
	// worker found this one dead and took the lease back, and then one of
	// its heartbeats got through. The worker has not lapsed as it handles
	// the task, but it had since the Fetch was sent: Extend finds the
	// lease lost, and the task does not run beside the attempt that took
	// it over.
	t.Run("lease taken back before a heartbeat got through, Fetch read after", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			w := startLapsed(t, 24*time.Hour, 0)
			w.b.cut.Store(true)
			held := make(chan struct{})
			var release sync.Once
			t.Cleanup(func() { release.Do(func() { close(held) }) })
			w.b.held.Store(&held)
			id := w.enqueue(t, 3)

			// A worker in contact for a DeadAfter of its own finds this
			// one (last heard of as it started) dead.
			judge := WorkerInfo{Name: "judge", Heartbeat: time.Hour}
			for range MissedBeats + 1 {
				require.NoError(t, w.b.Memory.Heartbeat(ctx, judge))
				time.Sleep(judge.Heartbeat)
			}
			require.NoError(t, w.b.Memory.Heartbeat(ctx, judge))
			taken, err := w.b.Memory.Fetch(ctx, "judge", 1, 24*time.Hour)
			require.NoError(t, err)
			require.Len(t, taken, 1, "the judge did not take the task over")
			require.Equal(t, EndWorkerLost, taken[0].Task.PreviousEnd)

			w.b.cut.Store(false)
			time.Sleep(w.cfg.Heartbeat / heartbeatRetries)
			synctest.Wait()
			require.False(t, w.live.lapsed(), "no heartbeat got through")
			release.Do(func() { close(held) })
			synctest.Wait()
			assert.Empty(t, w.ran(), "the lease taken back ran beside the attempt that took it over")
			snap, _, err := w.store.Snapshot(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, progress.StatePending, snap.State, "the lease taken back recorded the task's start or end")
			require.NoError(t, w.b.Ack(ctx, taken[0]))
		})
	})

	// The worker stops while it waits: once its shutdown's grace has
	// passed (before a quarter of an interval here), it hands the task
	// back unrun, as a task it does not run; it does not wait for the
	// quarter of an interval to pass.
	t.Run("worker stops", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := startLapsed(t, time.Hour, 0)
			id := w.enqueue(t, 1)
			stopping := time.Now()
			w.stop()
			assert.Less(t, time.Since(stopping), w.cfg.Heartbeat/4, "the stop did not end the wait")
			assert.Empty(t, w.ran(), "the flow ran while the worker had lapsed")
			task := w.get(t, id)
			assert.Equal(t, EndHandedBack, task.PreviousEnd, "the task was not handed back")
			assert.Equal(t, 1, task.NoRuns, "the lease that did not run")
			assert.Equal(t, 1, task.HandBacks, "its hand-back, not counted")
		})
	})

	// No heartbeat gets through in time: the worker hands the task back
	// unrun (EndHandedBack, Lease.NoRun) before another worker may take
	// the lease back as "worker lost", which would count; the task's next
	// lease, once a heartbeat gets through, runs it as its first attempt.
	// If the backend does not answer that hand-back, it is tried again
	// once a heartbeat gets through.
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("not back in time, hand-back answered %t", !refuse), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := startLapsed(t, time.Hour, 0)
				w.b.refuse.Store(refuse)
				// The Fetch leases the task an eighth of an interval
				// after the lapse; the worker waits another eighth.
				time.Sleep(w.cfg.Heartbeat / 8)
				id := w.enqueue(t, 1)
				time.Sleep(w.cfg.Heartbeat/8 - time.Second)
				synctest.Wait()
				assert.Empty(t, w.get(t, id).PreviousEnd, "handed back before a quarter of an interval")
				assert.Zero(t, w.b.refused.Load(), "handed back before a quarter of an interval")
				time.Sleep(time.Second)
				synctest.Wait()
				if refuse {
					assert.EqualValues(t, 1, w.b.refused.Load(), "hand-backs tried")
					assert.Zero(t, w.get(t, id).HandBacks, "the hand-back that did not get through")
					w.b.refuse.Store(false)
				} else {
					assert.Equal(t, EndHandedBack, w.get(t, id).PreviousEnd, "the task was not handed back")
				}
				assert.Empty(t, w.ran(), "the flow ran while the worker had lapsed")
				snap, _, err := w.store.Snapshot(context.Background(), id)
				require.NoError(t, err)
				assert.Equal(t, progress.StatePending, snap.State, "the lease that did not run recorded no start")

				snap = w.back(t, id)
				assert.Equal(t, []string{"attempt 2, lapsed false"}, w.ran())
				task := w.get(t, id)
				assert.Equal(t, 1, task.Attempts(), "attempts")
				assert.Equal(t, 1, task.NoRuns, "the lease that did not run")
				assert.Equal(t, 1, task.HandBacks, "its hand-back, not counted")
				var msgs []string
				for _, s := range snap.Details.StepResults {
					msgs = append(msgs, s.Message)
				}
				assert.Contains(t, msgs, "attempt 2 of 2 starts: attempt 1 was handed back before it ran (not counted)")
			})
		})
	}
}
