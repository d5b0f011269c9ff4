package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/libflow"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

const waitLong = 15 * time.Second

// faultyBackend wraps a Backend and makes some of its calls fail.
type faultyBackend struct {
	queue.Backend
	fetchFailures  atomic.Int32 // Fetch calls still to fail
	cancelFailures atomic.Int32 // Cancellations calls still to fail
	extendLost     atomic.Bool  // Extend always reports a lost lease
	maxAsked       atomic.Int32 // largest max passed to Fetch
	buryFailures   atomic.Int32 // Bury calls still to fail
	deaf           atomic.Bool  // Cancellations delivers nothing
}

func (b *faultyBackend) Bury(ctx context.Context, l *queue.Lease, reason string) error {
	if b.buryFailures.Add(-1) >= 0 {
		return errConnRefused
	}
	return b.Backend.Bury(ctx, l, reason)
}

var errConnRefused = fmt.Errorf("%w: connection refused", queue.ErrUnavailable)

func (b *faultyBackend) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	for {
		m := b.maxAsked.Load()
		if int32(max) <= m || b.maxAsked.CompareAndSwap(m, int32(max)) {
			break
		}
	}
	if b.fetchFailures.Add(-1) >= 0 {
		return nil, errConnRefused
	}
	return b.Backend.Fetch(ctx, worker, max, lease)
}

func (b *faultyBackend) Cancellations(ctx context.Context) (<-chan string, error) {
	if b.cancelFailures.Add(-1) >= 0 {
		return nil, errConnRefused
	}
	if b.deaf.Load() {
		ch := make(chan string)
		context.AfterFunc(ctx, func() { close(ch) })
		return ch, nil
	}
	return b.Backend.Cancellations(ctx)
}

func (b *faultyBackend) Extend(ctx context.Context, l *queue.Lease, lease time.Duration) error {
	if b.extendLost.Load() {
		return queue.ErrLeaseLost
	}
	return b.Backend.Extend(ctx, l, lease)
}

// faultyStore wraps a progress store and makes its first Appends fail.
type faultyStore struct {
	progress.Backend
	appendFailures atomic.Int32
}

func (s *faultyStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	if s.appendFailures.Add(-1) >= 0 {
		return "", errors.New("store: connection reset")
	}
	return s.Backend.Append(ctx, id, events...)
}

// logRecorder is a slog.Handler that keeps the messages it is given.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// setup is a Broker on memory backends, with a private registry.
type setup struct {
	mem    *queue.Memory
	store  *progress.MemoryStore
	reg    *registry.Registry
	broker *queue.Broker
}

func newSetup() *setup {
	mem := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	reg := registry.New()
	return &setup{mem: mem, store: store, reg: reg, broker: queue.NewBroker(mem, store, queue.BrokerConfig{Registry: reg})}
}

func (s *setup) enqueue(t *testing.T, name string, opts queue.EnqueueOptions) string {
	t.Helper()
	id, err := s.broker.Enqueue(context.Background(), name, nil, opts)
	require.NoError(t, err)
	return id
}

// runWorker runs w until the test ends, or until the stop it returns is
// called, and then checks that Run returned nil; stop waits for Run to
// return.
func runWorker(t *testing.T, w *queue.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "Worker.Run")
			case <-time.After(waitLong):
				require.FailNow(t, "Worker.Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitTerminal(t *testing.T, store progress.Store, id string) progress.Snapshot {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		snap, _, err := store.Snapshot(context.Background(), id)
		require.NoError(t, err)
		if snap.State.Terminal() {
			return snap
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "task did not end", "last snapshot %+v", snap)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fastBackoff(int) time.Duration { return time.Millisecond }

func TestWorkerSurvivesBackendErrors(t *testing.T) {
	s := newSetup()
	started := make(chan struct{})
	s.reg.MustRegister("ok", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) { return "ok", nil }))
	s.reg.MustRegister("wait", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	b := &faultyBackend{Backend: s.mem}
	b.fetchFailures.Store(3)
	b.cancelFailures.Store(2)
	logs := &logRecorder{}
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{Registry: s.reg, Logger: slog.New(logs)}))

	snap := waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{}))
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Equal(t, 2, logs.count("flows: listening for cancellations failed; retrying"))
	assert.Equal(t, 3, logs.count("flows: fetching tasks failed; retrying"))

	// Cancellation still reaches the worker after the failed subscriptions.
	id := s.enqueue(t, "wait", queue.EnqueueOptions{})
	select {
	case <-started:
	case <-time.After(waitLong):
		require.FailNow(t, "flow did not start")
	}
	require.NoError(t, s.broker.Cancel(context.Background(), id))
	snap = waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
}

func TestWorkerFetchesOnlyFreeSlots(t *testing.T) {
	s := newSetup()
	const limit = 2
	release := make(chan struct{})
	var running atomic.Int32
	s.reg.MustRegister("hold", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		running.Add(1)
		<-release
		return nil, nil
	}))
	b := &faultyBackend{Backend: s.mem}
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{Registry: s.reg, Concurrency: limit, Logger: slog.New(slog.DiscardHandler)}))
	ids := []string{
		s.enqueue(t, "hold", queue.EnqueueOptions{}),
		s.enqueue(t, "hold", queue.EnqueueOptions{}),
		s.enqueue(t, "hold", queue.EnqueueOptions{}),
	}
	require.Eventually(t, func() bool { return running.Load() == limit }, waitLong, 5*time.Millisecond)

	task, err := s.mem.Get(context.Background(), ids[2])
	require.NoError(t, err)
	assert.Equal(t, 0, task.Attempt, "the third task is not leased while every slot is taken")
	close(release)
	for _, id := range ids {
		assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, id).State)
	}
	assert.LessOrEqual(t, b.maxAsked.Load(), int32(limit), "Fetch asked for more tasks than slots")
}

func TestWorkerLeaseLostStopsFlow(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	sawCancel := make(chan struct{})
	s.reg.MustRegister("long", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		<-ctx.Done()
		close(sawCancel)
		return nil, ctx.Err()
	}))
	b := &faultyBackend{Backend: s.mem}
	b.extendLost.Store(true)
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
		Registry: s.reg, Lease: 30 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}))
	id := s.enqueue(t, "long", queue.EnqueueOptions{MaxAttempts: 1})

	// The worker stops the flow and records nothing: the task belongs to
	// whoever holds it now. Here that is the same worker again, once the
	// lease runs out, and the task has no attempts left.
	select {
	case <-sawCancel:
	case <-time.After(waitLong):
		require.FailNow(t, "flow context not cancelled after the lease was lost")
	}
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "gave up after 1 attempt: lease expired", snap.Details.Status)
	assert.Equal(t, int32(1), runs.Load())
}

// TestWorkerSurvivesGoexit: a flow that ends its goroutine
// (runtime.Goexit, as t.FailNow does) fails its attempt as if it had
// returned an error; its slot is freed and the task is retried.
func TestWorkerSurvivesGoexit(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	s.reg.MustRegister("exits", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		if ft.Attempt == 1 {
			runtime.Goexit()
		}
		return "second time", nil
	}))
	s.reg.MustRegister("other", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil }))
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
		Backoff: func(int) time.Duration { return time.Millisecond },
	}))
	id := s.enqueue(t, "exits", queue.EnqueueOptions{MaxAttempts: 3})
	other := s.enqueue(t, "other", queue.EnqueueOptions{})

	assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, other).State, "the slot was freed")
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, int32(2), runs.Load())
	require.Len(t, snap.Details.StepResults, 2)
	assert.Equal(t, "attempt 1 failed: flow ended its goroutine (runtime.Goexit) without returning; retrying in 1ms",
		snap.Details.StepResults[0].Message)
	assert.Equal(t, "attempt 2 of 3 starts: attempt 1 failed", snap.Details.StepResults[1].Message)
}

func TestWorkerStoreFailureHandsTaskBack(t *testing.T) {
	s := newSetup()
	var attempts []int
	var mu sync.Mutex
	s.reg.MustRegister("ok", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, ft.Attempt)
		return "ok", nil
	}))
	store := &faultyStore{Backend: s.store}
	store.appendFailures.Store(1) // the worker's Start
	logs := &logRecorder{}
	runWorker(t, queue.NewWorker(s.mem, store, queue.WorkerConfig{Registry: s.reg, Backoff: fastBackoff, Logger: slog.New(logs)}))

	snap := waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{}))
	assert.Equal(t, progress.StateSuccess, snap.State)
	mu.Lock()
	assert.Equal(t, []int{2}, attempts, "the flow runs once the store works again")
	mu.Unlock()
	assert.Equal(t, 1, logs.count("flows: progress store failed; giving the task back"))
}

// TestWorkerBackoffSkipsHandBacks: the backoff after a failed run is
// told the attempt that failed among those that count, not the lease's
// number, which a hand-back at shutdown raised.
func TestWorkerBackoffSkipsHandBacks(t *testing.T) {
	s := newSetup()
	started := make(chan struct{})
	var mu sync.Mutex
	var runs, backoffs []int
	s.reg.MustRegister("long", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		mu.Lock()
		runs = append(runs, ft.Attempt)
		mu.Unlock()
		switch ft.Attempt {
		case 1:
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		case 2:
			return nil, errors.New("model overloaded")
		}
		return "done", nil
	}))
	backoff := func(attempt int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		backoffs = append(backoffs, attempt)
		return time.Millisecond
	}
	quiet := slog.New(slog.DiscardHandler)
	first := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Logger: quiet, ShutdownGrace: time.Millisecond, Backoff: backoff})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	id := s.enqueue(t, "long", queue.EnqueueOptions{MaxAttempts: 2})
	select {
	case <-started:
	case <-time.After(waitLong):
		require.FailNow(t, "the first attempt did not start")
	}
	cancel()
	require.NoError(t, <-done)

	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Logger: quiet, Backoff: backoff}))
	snap := waitTerminal(t, s.store, id)
	require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{1, 2, 3}, runs, "a hand-back at shutdown, a failure, a success: three runs of a task with two attempts")
	assert.Equal(t, []int{1}, backoffs, "attempt 2 was the first that counted")
}

func TestWorkerRunRefusesSecondCall(t *testing.T) {
	s := newSetup()
	s.reg.MustRegister("ok", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) { return "ok", nil }))
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Logger: slog.New(slog.DiscardHandler)})
	runWorker(t, w)
	waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{})) // Run is under way

	err := w.Run(context.Background())
	assert.Error(t, err)
}

func TestWorkerRunEndedContext(t *testing.T) {
	s := newSetup()
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.NoError(t, w.Run(ctx))
	assert.NoError(t, w.Run(ctx), "a Worker can run again after Run returned")
}

func TestWorkerName(t *testing.T) {
	s := newSetup()
	a := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{})
	b := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{})
	assert.Regexp(t, `^.+-[0-9]+-[0-9a-f]{8}$`, a.Name())
	assert.NotEqual(t, a.Name(), b.Name())
	assert.Equal(t, "w1", queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Name: "w1"}).Name())
}

func TestDefaultBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		base    time.Duration
	}{
		{-1, time.Second},
		{0, time.Second},
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{8, 128 * time.Second},
		{9, 256 * time.Second},
		{10, 5 * time.Minute},
		{30, 5 * time.Minute},
		{1 << 20, 5 * time.Minute},
	} {
		t.Run(fmt.Sprint(tc.attempt), func(t *testing.T) {
			lo, hi := tc.base*8/10, tc.base*12/10
			seen := map[time.Duration]bool{}
			for range 50 {
				d := queue.DefaultBackoff(tc.attempt)
				assert.GreaterOrEqual(t, d, lo)
				assert.LessOrEqual(t, d, hi)
				seen[d] = true
			}
			assert.Greater(t, len(seen), 1, "backoff has jitter")
		})
	}
}

func TestWorkerBuryFailureIsMadeGoodByNextLease(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	s.reg.MustRegister("doomed", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		return nil, flow.Permanent(errors.New("bad key"))
	}))
	b := &faultyBackend{Backend: s.mem}
	b.buryFailures.Store(1)
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
		Registry: s.reg, Lease: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}))
	id := s.enqueue(t, "doomed", queue.EnqueueOptions{MaxAttempts: 3})
	assert.Equal(t, "bad key", waitTerminal(t, s.store, id).Details.Status)

	// The FAILURE is recorded but the task stays leased; once the lease
	// passes, the worker leases it again and buries it without running it.
	var dead []queue.DeadTask
	require.Eventually(t, func() bool {
		var err error
		dead, err = s.broker.Dead(context.Background(), 0)
		require.NoError(t, err)
		return len(dead) == 1
	}, waitLong, 5*time.Millisecond, "task not buried")
	assert.Equal(t, id, dead[0].ID)
	assert.Equal(t, "bad key", dead[0].Reason)
	assert.Equal(t, 1, dead[0].Attempts, "the lease that buried it did not run it")
	assert.Equal(t, int32(1), runs.Load(), "the flow ran once")
}

// retiringBackend records the names given to Retire.
type retiringBackend struct {
	queue.Backend
	mu      sync.Mutex
	retired []string
}

func (b *retiringBackend) Retire(ctx context.Context, worker string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retired = append(b.retired, worker)
	return nil
}

func TestWorkerRetiresWhenRunReturns(t *testing.T) {
	s := newSetup()
	b := &retiringBackend{Backend: s.mem}
	w := queue.NewWorker(b, s.store, queue.WorkerConfig{Name: "w7", Registry: s.reg, Logger: slog.New(slog.DiscardHandler)})
	stop := runWorker(t, w)
	s.reg.MustRegister("ok", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) { return "ok", nil }))
	waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{}))
	b.mu.Lock()
	assert.Empty(t, b.retired, "not retired while running")
	b.mu.Unlock()

	stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	assert.Equal(t, []string{"w7"}, b.retired)
}

// TestWorkerHearsCancellationFromHeartbeat: a cancellation that the feed
// missed stops the run when the lease is next extended.
func TestWorkerHearsCancellationFromHeartbeat(t *testing.T) {
	s := newSetup()
	fb := &faultyBackend{Backend: s.mem}
	fb.deaf.Store(true)
	started := make(chan struct{})
	s.reg.MustRegister("wait", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	runWorker(t, queue.NewWorker(fb, s.store, queue.WorkerConfig{
		Registry: s.reg, Lease: 150 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}))
	id := s.enqueue(t, "wait", queue.EnqueueOptions{})
	select {
	case <-started:
	case <-time.After(waitLong):
		require.FailNow(t, "the flow did not start")
	}
	require.NoError(t, s.broker.Cancel(context.Background(), id))
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
}

// TestWorkerHonoursRetryAfter: a flow error wrapped with flow.RetryAfter
// delays the retry by at least the asked delay, longer than the backoff,
// and the log step says so.
func TestWorkerHonoursRetryAfter(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	s.reg.MustRegister("busy", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
		if runs.Add(1) == 1 {
			return nil, flow.RetryAfter(errors.New("receiver busy"), 250*time.Millisecond)
		}
		return "done", nil
	}))
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Backoff: fastBackoff, Logger: slog.New(slog.DiscardHandler)}))
	id := s.enqueue(t, "busy", queue.EnqueueOptions{MaxAttempts: 2})
	snap := waitTerminal(t, s.store, id)
	require.Equal(t, progress.StateSuccess, snap.State, snap.Details.Status)
	assert.Equal(t, int32(2), runs.Load())
	require.NotEmpty(t, snap.Details.StepResults)
	assert.Equal(t, "attempt 1 failed: receiver busy; retrying in 250ms", snap.Details.StepResults[0].Message)
}

// TestWorkerKeepsCredentialsOutOfFailures runs a flow that fails with the
// error an HTTP client gives for an endpoint with credentials in its URL,
// and a flow that panics with one: the task's status and log (which the
// HTTP API serves) and the worker's logs say what failed, without the
// credentials.
func TestWorkerKeepsCredentialsOutOfFailures(t *testing.T) {
	const pass, key, token = "PLANTED-pass", "PLANTED-key", "PLANTED-token1234"
	endpoint := "https://user:" + pass + "@api.example/v1/chat?key=" + key
	s := newSetup()
	s.reg.MustRegister("calls_out", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, fmt.Errorf("Post %q: dial tcp: connection refused (Authorization: Bearer %s)", endpoint, token)
	}))
	s.reg.MustRegister("panics", flow.Func(func(context.Context, *flow.Task) (any, error) {
		panic("cannot reach " + endpoint)
	}))
	var logs syncbuf.Buffer
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg,
		Backoff:  func(int) time.Duration { return time.Millisecond },
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	runWorker(t, w)
	for _, name := range []string{"calls_out", "panics"} {
		t.Run(name, func(t *testing.T) {
			id := s.enqueue(t, name, queue.EnqueueOptions{MaxAttempts: 2})
			snap := waitTerminal(t, s.store, id)
			require.Equal(t, progress.StateFailure, snap.State)
			assert.Contains(t, snap.Details.Status, "api.example/v1/chat", "the status still says what failed")
			events, err := s.store.Events(context.Background(), id, "")
			require.NoError(t, err)
			var seen []string
			for _, ev := range events {
				seen = append(seen, ev.Status)
				if ev.Step != nil {
					seen = append(seen, ev.Step.Message)
				}
			}
			for _, secret := range []string{pass, key, token} {
				assert.NotContains(t, snap.Details.Status, secret)
				assert.NotContains(t, fmt.Sprint(seen), secret)
			}
		})
	}
	for _, secret := range []string{pass, key, token} {
		assert.NotContains(t, logs.String(), secret)
	}
	assert.Contains(t, logs.String(), "flow failed")
}

// TestNewWorkerWarnsWhenTheBackendHidesItsRegistry: a wrapper that
// passes on the Backend methods only hides the backend's worker registry
// (and with it Retirer and Admitter); NewWorker says so once, naming the
// wrapper. The backend itself, or a wrapper that passes the registry on,
// gets no warning.
func TestNewWorkerWarnsWhenTheBackendHidesItsRegistry(t *testing.T) {
	s := newSetup()
	type bare struct{ queue.Backend }
	type passing struct {
		queue.Backend
		queue.WorkerRegistry
	}
	for _, tt := range []struct {
		name    string
		backend queue.Backend
		warns   bool
	}{
		{"the backend", s.mem, false},
		{"a wrapper passing the registry on", passing{s.mem, s.mem}, false},
		{"a wrapper hiding it", bare{s.mem}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logRecorder{}
			queue.NewWorker(tt.backend, s.store, queue.WorkerConfig{Registry: s.reg, Logger: slog.New(logs)})
			var warned []string
			for _, m := range logs.msgs {
				if strings.HasPrefix(m, "flows: the backend keeps no worker registry") {
					warned = append(warned, m)
				}
			}
			if !tt.warns {
				assert.Empty(t, warned)
				return
			}
			require.Len(t, warned, 1)
			assert.Contains(t, warned[0], "no heartbeat")
			assert.Contains(t, warned[0], "Admitter")
		})
	}
}

// TestWorkerLeavesALibraryFlowItLacks: a worker that lacks a flow of the
// module's own packages (named "flows.", as notify's, and registered
// through libflow.Mark, as no host's flow can be) hands its tasks back
// unrun and not counted, for a worker that has it, rather than fail them
// as an unknown flow; past MaxHandBacks it ends the task FAILURE. Any
// other unknown flow still fails at once.
func TestWorkerLeavesALibraryFlowItLacks(t *testing.T) {
	s := newSetup()
	noop := flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil })
	s.reg.MustRegister("flows.lib", libflow.Mark(noop))
	s.reg.MustRegister("app", noop)
	logs := &logRecorder{}
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: registry.New(), Backoff: fastBackoff, MaxHandBacks: 3, Logger: slog.New(logs),
	}))

	lib := s.enqueue(t, "flows.lib", queue.EnqueueOptions{})
	app := s.enqueue(t, "app", queue.EnqueueOptions{})

	snap := waitTerminal(t, s.store, lib)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, `gave up after 4 hand-backs: unknown flow: "flows.lib"`, snap.Details.Status)
	info, err := s.broker.Task(context.Background(), lib)
	require.NoError(t, err)
	assert.Equal(t, 4, info.Task.HandBacks)
	assert.Equal(t, 0, info.Task.Attempts(), "no lease ran the flow")
	assert.Equal(t, 4, logs.count("flows: this worker lacks the task's flow; handing it back for a worker that has it"))

	snap = waitTerminal(t, s.store, app)
	assert.Equal(t, `unknown flow: "app"`, snap.Details.Status)
}

// TestWorkerFailsAResultThatIsNotJSON: a flow whose result cannot be
// encoded as JSON (a NaN, a channel) ends FAILURE at once, not retried
// and buried, with a status that says so, rather than SUCCESS with an
// error message in place of its final result.
func TestWorkerFailsAResultThatIsNotJSON(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	s.reg.MustRegister("nan", flow.Func(func(context.Context, *flow.Task) (any, error) {
		runs.Add(1)
		return map[string]float64{"score": math.NaN()}, nil
	}))
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Backoff: fastBackoff}))

	id := s.enqueue(t, "nan", queue.EnqueueOptions{})
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "result cannot be encoded as JSON: json: unsupported value: NaN", snap.Details.Status)
	assert.Empty(t, snap.Details.FinalResult)
	assert.Equal(t, int32(1), runs.Load(), "not retried")
	dead, err := s.broker.Dead(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, id, dead[0].ID)
}

// nilPointerError is an error whose Error method reads its receiver: a
// nil *nilPointerError returned as an error panics when it is asked
// for its text.
type nilPointerError struct{ msg string }

func (e *nilPointerError) Error() string { return e.msg }

// panickingResult is a result whose MarshalJSON panics.
type panickingResult struct{ m map[string]*string }

func (r panickingResult) MarshalJSON() ([]byte, error) { return []byte(*r.m["x"]), nil }

// TestWorkerSurvivesWhatAFlowReturns: a flow that returns an error whose
// methods panic (a nil pointer of an error type, the classic typed nil)
// or a result whose MarshalJSON panics fails as a flow that panicked,
// not retried, and the worker goes on: such a panic is the flow's, and
// must not crash the worker's process.
func TestWorkerSurvivesWhatAFlowReturns(t *testing.T) {
	s := newSetup()
	var runs atomic.Int32
	s.reg.MustRegister("typednil", flow.Func(func(context.Context, *flow.Task) (any, error) {
		runs.Add(1)
		var err *nilPointerError
		return nil, err
	}))
	s.reg.MustRegister("badmarshal", flow.Func(func(context.Context, *flow.Task) (any, error) {
		runs.Add(1)
		return panickingResult{}, nil
	}))
	s.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ok", nil }))
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{Registry: s.reg, Backoff: fastBackoff}))

	for _, name := range []string{"typednil", "badmarshal"} {
		t.Run(name, func(t *testing.T) {
			runs.Store(0)
			snap := waitTerminal(t, s.store, s.enqueue(t, name, queue.EnqueueOptions{}))
			assert.Equal(t, progress.StateFailure, snap.State)
			assert.True(t, strings.HasPrefix(snap.Details.Status, "panic: "), snap.Details.Status)
			assert.Equal(t, int32(1), runs.Load(), "not retried")
			snap = waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{}))
			assert.Equal(t, progress.StateSuccess, snap.State, "the worker goes on")
		})
	}
}

// TestWorkerLargestDurations: the largest durations a WorkerConfig takes,
// as a user who means "no bound" may give, keep that meaning: a worker
// whose Heartbeat is a century and more is not taken for lapsed (its
// window, MissedBeats intervals from a heartbeat, does not wrap into the
// past) and runs its task to the end once.
func TestWorkerLargestDurations(t *testing.T) {
	s := newSetup()
	huge := time.Duration(math.MaxInt64)
	var runs atomic.Int32
	s.reg.MustRegister("slow", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(300 * time.Millisecond): // past the first heartbeats
			return "done", nil
		}
	}))
	runWorker(t, queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
		// Half the largest: three intervals of it pass the largest.
		Heartbeat: huge / 2, Lease: huge, ShutdownGrace: huge, AbandonAfter: huge,
	}))
	id := s.enqueue(t, "slow", queue.EnqueueOptions{MaxAttempts: 1})
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, int32(1), runs.Load())

	w := queue.WorkerInfo{Heartbeat: huge / 2, LastSeen: time.Now()}
	assert.Equal(t, huge, w.DeadAfter(), "three intervals stop at the largest duration")
	assert.True(t, w.Alive(time.Now()), "a worker that just beat is alive")
}
