package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/opctx"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// Defaults used where a WorkerConfig field is zero.
const (
	DefaultConcurrency   = 10
	DefaultLease         = 30 * time.Second
	DefaultShutdownGrace = 30 * time.Second
	DefaultAbandonAfter  = 5 * time.Second
)

// WorkerConfig configures a Worker. The zero value is usable: each zero
// field takes the default its comment names.
type WorkerConfig struct {
	// Registry is where the flows named by tasks are looked up. Nil means
	// registry.Default.
	Registry *registry.Registry

	// Name identifies the worker to the backend and in logs. Empty means
	// hostname-pid-random.
	Name string

	// Concurrency is the most flows the worker runs at once. Zero means
	// DefaultConcurrency. The worker only fetches as many tasks as it has
	// free slots.
	Concurrency int

	// Lease is how long a fetched task stays claimed without news from
	// the worker. While a flow runs, the worker extends the lease every
	// Lease/3, so a long flow is never handed to another worker; if the
	// worker dies, its tasks are run again by others once Lease passes.
	// Zero means DefaultLease.
	Lease time.Duration

	// ShutdownGrace is how long Run lets in-flight flows finish once its
	// context ends. Then their contexts are cancelled, and a task whose
	// flow does not come back with a result (it fails, or has not returned
	// within AbandonAfter) is given back to the queue to run again
	// elsewhere. The interrupted run still counts as one of the task's
	// Task.MaxAttempts, as a run cut short by a worker's death does: a
	// task handed back by as many shutdowns as it has attempts ends
	// FAILURE. Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration

	// AbandonAfter is how long the worker waits for a flow to return once
	// the flow's context has been cancelled (task cancelled, time limit
	// passed, shutdown). Past it, the worker records the outcome anyway
	// and frees the slot; the flow's goroutine is left to finish on its
	// own and whatever it reports afterwards is refused by the store.
	// Zero means DefaultAbandonAfter.
	AbandonAfter time.Duration

	// Backoff gives the delay before a failed task's next attempt; its
	// argument is the attempt that failed (1 for the first run). Nil
	// means DefaultBackoff.
	Backoff func(attempt int) time.Duration

	// Logger receives the worker's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultBackoff is the retry delay used when WorkerConfig.Backoff is
// nil: one second after the first attempt, doubling after each later one
// up to five minutes, with ±20% random jitter so that tasks failing
// together do not come back together.
func DefaultBackoff(attempt int) time.Duration {
	const (
		base    = time.Second
		ceiling = 5 * time.Minute
	)
	d := ceiling
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 20 {
		d = min(base<<(attempt-1), ceiling)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*mathrand.Float64()))
}

// Worker fetches tasks from a Backend and runs their flows, reporting to a
// progress.Store. Create it with NewWorker and start it with Run; a process
// may run several Workers, on one backend or on many.
//
// For each task the Worker:
//   - fails it with StatusCancelled if it was cancelled before it started,
//     and only acknowledges it if a previous attempt already ended it;
//   - fails it if its flow is not registered, or if it has been leased
//     more than Task.MaxAttempts times (its runs keep killing workers);
//   - runs the flow with a context that is cancelled by Broker.Cancel (as
//     the cancellation feed announces it, or at the latest when the lease
//     is next extended, see Backend.Extend), by the task's time limit
//     (Task.Timeout) and by shutdown;
//   - records SUCCESS with the flow's result, or retries a failed run
//     after Backoff while attempts remain (append a "log" step saying so),
//     or records FAILURE. Errors wrapping flow.ErrPermanent or
//     flow.ErrInvalidInputs, and panics, are not retried. A run cancelled
//     or timed out before its flow returns ends FAILURE whatever the flow
//     returns; a result returned first stands.
//
// Every FAILURE the Worker records buries the task in the dead-letter set
// (Backend.Bury) with the FAILURE's status as the reason, except a
// cancellation, which is only acknowledged. If burying fails, the next
// worker to lease the task finds it FAILED and buries it then. A task
// re-queued from a dead one (Task.RequeuedFrom) logs "re-queued from task
// <id>" as it first starts.
//
// A panic in a flow becomes FAILURE with the status "panic: <value>"; it
// never crashes the worker. A flow that ends its goroutine
// (runtime.Goexit, as testing's FailNow does) fails its attempt, as if
// it had returned an error.
type Worker struct {
	backend Backend
	store   progress.Store
	// finisher is backend when it is also store and a Finisher.
	finisher Finisher
	cfg      WorkerConfig
	log      *slog.Logger

	running atomic.Bool
	ops     *opctx.Source // contexts of backend and store calls, set by Run

	mu     sync.Mutex
	active map[string]*activeRun // running tasks by id
	// flowsStopped, once set by stopFlows, cancels every run, those
	// tracked later too.
	flowsStopped error
	recent       map[string]time.Time // cancellations of tasks not running here, when heard

	// flowReturned, when set (by tests), is called as a flow's Run has
	// returned, before the worker receives its outcome.
	flowReturned func(taskID string)
}

// activeRun is a running task's run; next is another run of the same
// task (a lease lost and the task leased again by this worker).
type activeRun struct {
	cancel context.CancelCauseFunc
	next   *activeRun
}

// NewWorker returns a Worker that takes tasks from backend and records
// their progress in store. Zero fields of cfg take their defaults. When
// backend and store are the same value and it implements Finisher (the
// Redis backend does), a task's success and its acknowledgement go
// together.
func NewWorker(backend Backend, store progress.Store, cfg WorkerConfig) *Worker {
	if cfg.Registry == nil {
		cfg.Registry = registry.Default
	}
	if cfg.Name == "" {
		cfg.Name = defaultWorkerName()
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.AbandonAfter <= 0 {
		cfg.AbandonAfter = DefaultAbandonAfter
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Worker{
		backend: backend,
		store:   store,
		cfg:     cfg,
		log:     cfg.Logger.With("worker", cfg.Name),
		active:  map[string]*activeRun{},
		recent:  map[string]time.Time{},
	}
	if f, ok := backend.(Finisher); ok && sameValue(backend, store) {
		w.finisher = f
	}
	return w
}

// Name returns the worker's name, as given in WorkerConfig.Name or made
// up by NewWorker.
func (w *Worker) Name() string { return w.cfg.Name }

func defaultWorkerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Errors that say why a running flow's context was cancelled
// (context.Cause).
var (
	errTaskCancelled = errors.New("queue: task cancelled")
	errTimedOut      = errors.New("queue: task timed out")
	errShutdown      = errors.New("queue: worker shutting down")
	errLeaseStolen   = errors.New("queue: lease lost to another worker")
)

// Backend operations are bounded by opTimeout (to a second more, see
// job.op), and fetch errors are
// retried after a delay growing from minFetchBackoff to maxFetchBackoff.
const (
	opTimeout       = 10 * time.Second
	minFetchBackoff = 100 * time.Millisecond
	maxFetchBackoff = 5 * time.Second
)

// Run fetches and runs tasks until ctx ends, then shuts down gracefully
// and returns nil: it stops fetching, lets the flows in flight finish for
// ShutdownGrace, then cancels the rest, giving their tasks back to the
// queue (see WorkerConfig.ShutdownGrace). Errors of the backend do not end
// Run: they are logged and the worker tries again after a growing delay.
// A Worker runs one Run at a time; a second concurrent call returns an
// error at once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("queue: Worker.Run is already running")
	}
	defer w.running.Store(false)

	// What the worker does for tasks it already holds outlives ctx: only
	// the shutdown sequence below ends it.
	base := context.WithoutCancel(ctx)
	w.ops = opctx.New(base, opTimeout, time.Second)
	w.mu.Lock()
	w.flowsStopped = nil
	w.mu.Unlock()
	listenCtx, stopListening := context.WithCancel(base)
	defer stopListening()

	// Listen for cancellations before the first fetch, so that none is
	// missed for a task this worker holds.
	cancels := w.subscribe(ctx, listenCtx)
	if cancels == nil {
		return nil
	}
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		w.listen(listenCtx, cancels)
	}()

	w.log.Info("flows: worker started", "concurrency", w.cfg.Concurrency, "lease", w.cfg.Lease)
	var inFlight sync.WaitGroup
	w.fetchLoop(ctx, &inFlight, func(l *Lease) { w.handle(base, l) })

	drained := make(chan struct{})
	go func() {
		inFlight.Wait()
		close(drained)
	}()
	grace := time.NewTimer(w.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-drained:
	case <-grace.C:
		w.log.Warn("flows: shutdown grace passed; interrupting the flows still running", "grace", w.cfg.ShutdownGrace)
		w.stopFlows(errShutdown)
		<-drained
	}
	stopListening()
	<-listening
	w.retire(base)
	w.log.Info("flows: worker stopped")
	return nil
}

// retire tells a backend that keeps per-worker state that this worker is
// gone (see Retirer).
func (w *Worker) retire(base context.Context) {
	r, ok := w.backend.(Retirer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(base, opTimeout)
	defer cancel()
	if err := r.Retire(ctx, w.cfg.Name); err != nil {
		w.log.Warn("flows: retiring the worker from the backend failed", "err", err)
	}
}

// fetchLoop leases tasks for the free slots and hands each to handle,
// until ctx ends. Tasks run on goroutines that take one task after the
// other, at most one per slot, started as needed and ended when fetchLoop
// returns: a goroutine whose stack has grown for one task keeps it for
// the next, where a goroutine per task would grow it again every time.
func (w *Worker) fetchLoop(ctx context.Context, inFlight *sync.WaitGroup, handle func(*Lease)) {
	slots := make(chan struct{}, w.cfg.Concurrency)
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	jobs := make(chan *Lease)
	defer close(jobs)
	runners := 0
	dispatch := func(l *Lease) {
		select {
		case jobs <- l: // an idle runner took it
			return
		default:
		}
		if runners == cap(slots) {
			// Every runner exists: one that has just released its slot
			// takes l as soon as it is back.
			jobs <- l
			return
		}
		runners++
		inFlight.Go(func() {
			for ok := true; ok; l, ok = <-jobs {
				handle(l)
				release(1)
			}
		})
	}
	backoff := minFetchBackoff
	for {
		// Wait for one free slot, then take every other free one.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	take:
		for n < cap(slots) {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break take
			}
		}

		leases, err := w.backend.Fetch(ctx, w.cfg.Name, n, w.cfg.Lease)
		if len(leases) > n {
			// A backend that hands out more than asked for must not
			// break the concurrency limit: give the extra back.
			w.log.Error("flows: backend leased more tasks than asked for", "asked", n, "got", len(leases))
			for _, l := range leases[n:] {
				w.giveBack(context.WithoutCancel(ctx), l, time.Now())
			}
			leases = leases[:n]
		}
		release(n - len(leases))
		for _, l := range leases {
			dispatch(l)
		}
		if err == nil {
			backoff = minFetchBackoff
			continue
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Error("flows: fetching tasks failed; retrying", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxFetchBackoff)
	}
}

// subscribe opens the backend's cancellation feed, retrying while the
// backend fails, until ctx (Run's) ends; then it returns nil.
func (w *Worker) subscribe(ctx, listenCtx context.Context) <-chan string {
	backoff := minFetchBackoff
	for {
		ch, err := w.backend.Cancellations(listenCtx)
		if err == nil {
			return ch
		}
		w.log.Error("flows: listening for cancellations failed; retrying", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, maxFetchBackoff)
	}
}

// listen cancels the running tasks named on the cancellation feed until
// ctx ends, subscribing again if the feed closes early.
func (w *Worker) listen(ctx context.Context, cancels <-chan string) {
	for {
		for id := range cancels {
			w.cancelActive(id)
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("flows: cancellation feed closed; listening again")
		if !sleep(ctx, minFetchBackoff) {
			return
		}
		if cancels = w.subscribe(ctx, ctx); cancels == nil {
			return
		}
	}
}

// recentCancelWindow is how long a worker remembers the cancellation of
// a task it was not running: a run of that task that starts meanwhile
// (fetched before the cancellation, tracked after it) is cancelled at
// once.
const recentCancelWindow = time.Minute

// maxRecentCancels is the size past which forgetting old cancellations
// starts.
const maxRecentCancels = 1024

func (w *Worker) cancelActive(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active[id] == nil {
		now := time.Now()
		if len(w.recent) >= maxRecentCancels {
			for k, at := range w.recent {
				if now.Sub(at) > recentCancelWindow {
					delete(w.recent, k)
				}
			}
		}
		w.recent[id] = now
		return
	}
	for r := w.active[id]; r != nil; r = r.next {
		r.cancel(errTaskCancelled)
	}
}

// stopFlows cancels every run with cause, those tracked from now on
// too, until the next Run.
func (w *Worker) stopFlows(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flowsStopped = cause
	for _, r := range w.active {
		for ; r != nil; r = r.next {
			r.cancel(cause)
		}
	}
}

// track records the cancel func of a running task until untrack is
// called with the run it returns. A task cancelled recently (see
// cancelActive), or a run tracked after stopFlows, is cancelled at once.
func (w *Worker) track(id string, cancel context.CancelCauseFunc) *activeRun {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := &activeRun{cancel: cancel, next: w.active[id]}
	w.active[id] = r
	if w.flowsStopped != nil {
		cancel(w.flowsStopped)
	}
	if at, ok := w.recent[id]; ok {
		delete(w.recent, id)
		if time.Since(at) <= recentCancelWindow {
			cancel(errTaskCancelled)
		}
	}
	return r
}

// untrack forgets the run r of task id.
func (w *Worker) untrack(id string, r *activeRun) {
	w.mu.Lock()
	defer w.mu.Unlock()
	head := w.active[id]
	if head == r {
		if r.next == nil {
			delete(w.active, id)
		} else {
			w.active[id] = r.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == r {
			p.next = r.next
			return
		}
	}
}

// job is one leased task in the hands of the worker.
type job struct {
	w     *Worker
	base  context.Context // for backend and store calls: outlives Run's ctx
	lease *Lease
	task  *Task
	rep   *progress.TaskReporter
	log   atomic.Pointer[slog.Logger] // see logger
	// fin is the reporter's store when the worker has a Finisher.
	fin *finishingStore
}

// logger returns the worker's logger with the task's id, flow and
// attempt, made on first use: most tasks log nothing.
func (j *job) logger() *slog.Logger {
	if l := j.log.Load(); l != nil {
		return l
	}
	t := j.task
	l := j.w.log.With("task_id", t.ID, "flow", t.Flow, "attempt", t.Attempt)
	if j.log.CompareAndSwap(nil, l) {
		return l
	}
	return j.log.Load()
}

// finishingStore is the store of a job's reporter when the worker's
// backend is a Finisher: once armed (by succeed), the Append that carries
// the terminal event also acknowledges the lease, in one step.
type finishingStore struct {
	progress.Store
	f     Finisher
	lease *Lease
	armed atomic.Bool
	acked atomic.Bool
}

func (s *finishingStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	if !s.armed.Load() || len(events) == 0 || !events[len(events)-1].Terminal() {
		return s.Store.Append(ctx, taskID, events...)
	}
	last, acked, err := s.f.AppendAndAck(ctx, s.lease, events...)
	s.acked.Store(acked)
	return last, err
}

// op returns the context of a backend or store call: it ends opTimeout
// (up to a second more) from now. It is shared with the calls made about
// the same time (see opctx), and ends by its deadline.
func (j *job) op() context.Context { return j.w.ops.Get() }

// handle takes one leased task to its end: a terminal state and an Ack,
// or a Retry.
func (w *Worker) handle(base context.Context, l *Lease) {
	t := l.Task
	j := &job{w: w, base: base, lease: l, task: t}
	var store progress.Store = w.store
	if w.finisher != nil {
		j.fin = &finishingStore{Store: w.store, f: w.finisher, lease: l}
		store = j.fin
	}
	j.rep = progress.NewTaskReporter(store, t.ID, w.log) // it names the task itself

	if t.Cancelled {
		j.cancelled()
		return
	}
	// A re-queued task logs where it came from when it first starts, which
	// takes its state first. Any other task is started at once: the store
	// refuses the start of a task that is unknown or has ended, and only
	// then is the state read (see alreadyEnded); unless the backend read
	// the state with the lease (see Lease.State).
	requeued := false
	if t.RequeuedFrom != "" {
		ctx := j.op()
		snap, _, err := w.store.Snapshot(ctx, t.ID)
		switch {
		case errors.Is(err, progress.ErrNotFound):
			j.logger().Error("flows: task has no progress record; dropping it")
			j.ack()
			return
		case err != nil:
			j.storeDown(err)
			return
		case snap.State.Terminal():
			j.ended(snap)
			return
		}
		requeued = snap.State == progress.StatePending
	}
	entry, err := w.cfg.Registry.Lookup(t.Flow)
	if err != nil {
		j.fail(err.Error())
		return
	}
	if t.MaxAttempts > 0 && t.Attempt > t.MaxAttempts {
		j.fail(fmt.Sprintf("gave up after %s: worker lost", plural(t.MaxAttempts, "attempt")))
		return
	}
	start := []progress.Event{{Type: progress.EventState, State: progress.StateProgress, Status: "Running"}}
	if requeued {
		start = append(start, progress.LogEvent("re-queued from task "+t.RequeuedFrom))
	}
	if j.fin != nil && l.State != "" {
		// The backend, which is the store, read the state as it leased
		// the task (see Lease.State): no need to learn it by recording
		// the start first. The start goes with the flow's first events.
		if l.State.Terminal() {
			j.alreadyEnded()
			return
		}
		j.rep.Report(start...)
		j.run(entry.Flow)
		return
	}
	ctx := j.op()
	_, err = w.store.Append(ctx, t.ID, start...)
	switch {
	case errors.Is(err, progress.ErrFinished):
		j.alreadyEnded()
		return
	case errors.Is(err, progress.ErrNotFound):
		j.logger().Error("flows: task has no progress record; dropping it")
		j.ack()
		return
	case err != nil:
		j.storeDown(err)
		return
	}
	j.run(entry.Flow)
}

// outcome is what a flow's Run returned, and why its context had been
// cancelled by then (nil if it had not).
type outcome struct {
	result any
	err    error
	cause  error
}

// errGoexit is the error of a flow that ended its goroutine
// (runtime.Goexit, as testing's FailNow does) instead of returning.
var errGoexit = errors.New("flow ended its goroutine (runtime.Goexit) without returning")

// panicError is a panic recovered from a flow.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// run runs the flow and records its outcome.
func (j *job) run(f flow.Flow) {
	t := j.task
	// Not a child of a context of the worker's, which every run would
	// join and leave under one lock: shutdown cancels the tracked runs
	// (see stopFlows).
	ctx, cancel := context.WithCancelCause(j.base)
	defer cancel(nil)
	if t.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, t.Timeout, errTimedOut)
		defer stop()
	}
	// A Cancel that landed after the fetch read the task was announced
	// before this run was tracked: track finds it among the recent ones.
	defer j.w.untrack(t.ID, j.w.track(t.ID, cancel))

	hb := j.startHeartbeat(cancel)

	done := make(chan outcome, 1) // buffered: an abandoned flow still returns
	go func() {
		returned := false
		defer func() {
			if v := recover(); v != nil {
				j.logger().Error("flows: flow panicked", "panic", v, "stack", string(debug.Stack()))
				done <- outcome{err: &panicError{value: v}, cause: context.Cause(ctx)}
			} else if !returned {
				done <- outcome{err: errGoexit, cause: context.Cause(ctx)}
			}
		}()
		res, err := f.Run(ctx, &flow.Task{ID: t.ID, Flow: t.Flow, Attempt: t.Attempt, Inputs: t.Inputs, Progress: j.rep})
		returned = true
		// The cause is read as the flow returns: a cancellation, time
		// limit or shutdown landing after that does not undo its result.
		out := outcome{result: res, err: err, cause: context.Cause(ctx)}
		if hook := j.w.flowReturned; hook != nil {
			hook(t.ID)
		}
		done <- out
	}()

	var out outcome
	returned := true
	select {
	case out = <-done:
	case <-ctx.Done():
		abandon := time.NewTimer(j.w.cfg.AbandonAfter)
		select {
		case out = <-done:
		case <-abandon.C:
			returned = false
		}
		abandon.Stop()
	}
	cause := out.cause
	if !returned {
		cause = context.Cause(ctx)
	}
	hb.stop()
	if !returned {
		j.logger().Warn("flows: flow did not return after its context was cancelled; abandoning it",
			"cause", cause, "waited", j.w.cfg.AbandonAfter)
	}
	j.settle(out, returned, cause)
}

// heartbeat extends a run's lease every Lease/3 until stop is called; when
// the lease turns out to be lost, or the task cancelled, it cancels the
// run. It is a timer, not a
// goroutine: most flows end before the first beat, and cost nothing more.
type heartbeat struct {
	j        *job
	cancel   context.CancelCauseFunc
	interval time.Duration
	timer    *time.Timer

	mu      sync.Mutex
	stopped bool
	beating sync.WaitGroup // a beat in progress
}

func (j *job) startHeartbeat(cancel context.CancelCauseFunc) *heartbeat {
	h := &heartbeat{j: j, cancel: cancel, interval: max(j.w.cfg.Lease/3, time.Millisecond)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timer = time.AfterFunc(h.interval, h.beat)
	return h
}

// beat extends the lease once and sets the timer for the next beat.
func (h *heartbeat) beat() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.beating.Add(1)
	h.mu.Unlock()
	defer h.beating.Done()

	j := h.j
	ctx := j.op()
	err := j.w.backend.Extend(ctx, j.lease, j.w.cfg.Lease)
	switch {
	case err == nil:
	case errors.Is(err, ErrLeaseLost):
		j.logger().Warn("flows: lease lost; stopping the flow", "err", err)
		h.cancel(errLeaseStolen)
		return
	case errors.Is(err, ErrCancelled):
		// The cancellation feed may have missed it; the lease is
		// extended all the same and kept until the run is settled.
		j.logger().Info("flows: task cancelled; stopping the flow")
		h.cancel(errTaskCancelled)
	default:
		j.logger().Warn("flows: extending the lease failed", "err", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.timer.Reset(h.interval)
	}
}

// stop ends the beats and waits for one in progress, so that no Extend
// follows the run's outcome.
func (h *heartbeat) stop() {
	h.mu.Lock()
	h.stopped = true
	h.timer.Stop()
	h.mu.Unlock()
	h.beating.Wait()
}

// settle records the outcome of a run. cause is why the flow's context
// was cancelled before the flow returned, nil if it was not.
func (j *job) settle(out outcome, returned bool, cause error) {
	t := j.task
	succeeded := returned && out.err == nil
	switch {
	case errors.Is(cause, errTaskCancelled):
		j.cancelled()
	case errors.Is(cause, errTimedOut):
		j.fail(fmt.Sprintf("timed out after %s", t.Timeout))
	case errors.Is(cause, errLeaseStolen):
		// Another worker holds the task now and will end it; a result
		// is still worth recording if there is one.
		if succeeded {
			j.succeed(out.result)
		}
	case errors.Is(cause, errShutdown):
		if succeeded {
			j.succeed(out.result)
			return
		}
		j.logger().Info("flows: handing the task back for another worker")
		j.giveBack(time.Now())
	case succeeded:
		j.succeed(out.result)
	default:
		j.failed(out.err)
	}
}

// failed handles an error returned by the flow: retry or FAILURE.
func (j *job) failed(err error) {
	t := j.task
	var pe *panicError
	retryable := !errors.Is(err, flow.ErrPermanent) && !errors.Is(err, flow.ErrInvalidInputs) && !errors.As(err, &pe)
	if retryable && t.Attempt < t.MaxAttempts {
		delay := max(j.w.cfg.Backoff(t.Attempt), 0)
		msg := fmt.Sprintf("attempt %d failed: %s; retrying in %s", t.Attempt, errText(err), delay.Round(time.Millisecond))
		j.logger().Info("flows: flow failed; retrying", "err", err, "retry_in", delay)
		ctx := j.op()
		_ = j.rep.Flush(ctx) // the flow's own reports come first
		_, aerr := j.w.store.Append(ctx, t.ID, progress.LogEvent(msg))
		if errors.Is(aerr, progress.ErrFinished) {
			j.ack() // ended meanwhile (cancelled)
			return
		}
		j.giveBack(time.Now().Add(delay))
		return
	}
	reason := errText(err)
	if t.Attempt > 1 {
		reason = fmt.Sprintf("failed after %d attempts: %s", t.Attempt, reason)
	}
	j.logger().Info("flows: flow failed", "err", err)
	j.fail(reason)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func errText(err error) string {
	if s := err.Error(); s != "" {
		return s
	}
	return "flow failed"
}

// succeed records SUCCESS and acknowledges the task: in one step when the
// backend is a Finisher, unless that could not acknowledge it.
func (j *job) succeed(result any) {
	if j.fin != nil {
		j.fin.armed.Store(true)
	}
	ctx := j.op()
	err := j.rep.Succeed(ctx, result)
	if j.fin != nil && j.fin.acked.Load() {
		return
	}
	j.finished(err)
}

// fail records FAILURE with reason and buries the task.
func (j *job) fail(reason string) { j.end(reason, true) }

// cancelled records FAILURE with StatusCancelled and acknowledges the
// task: a cancelled task is not buried.
func (j *job) cancelled() { j.end(StatusCancelled, false) }

// end records FAILURE with reason, then buries the task if bury is set or
// acknowledges it. A task that had already ended (cancelled meanwhile, say)
// is only acknowledged.
func (j *job) end(reason string, bury bool) {
	ctx := j.op()
	err := j.rep.Fail(ctx, reason)
	switch {
	case err == nil && bury:
		j.bury(reason)
	case errors.Is(err, progress.ErrFinished):
		j.alreadyEnded()
	default:
		j.finished(err)
	}
}

// alreadyEnded handles a task found ended by an earlier attempt (or by a
// cancellation meanwhile): see ended.
func (j *job) alreadyEnded() {
	ctx := j.op()
	snap, _, err := j.w.store.Snapshot(ctx, j.task.ID)
	switch {
	case errors.Is(err, progress.ErrNotFound):
		j.ack()
	case err != nil:
		j.storeDown(err)
	default:
		j.ended(snap)
	}
}

// ended handles a task whose snapshot is terminal: a FAILURE that an
// earlier attempt could not bury is buried now, with its recorded reason;
// anything else is acknowledged.
func (j *job) ended(snap progress.Snapshot) {
	if snap.State == progress.StateFailure && snap.Details.Status != StatusCancelled {
		j.bury(snap.Details.Status)
		return
	}
	j.ack()
}

// finished acknowledges the task once its terminal state is recorded (by
// this call or an earlier one). If the store could not record it, the task
// is given back so that a later attempt does.
func (j *job) finished(recordErr error) {
	if recordErr != nil && !errors.Is(recordErr, progress.ErrFinished) && !errors.Is(recordErr, progress.ErrNotFound) {
		j.storeDown(recordErr)
		return
	}
	j.ack()
}

// storeDown gives the task back for later when the progress store failed.
func (j *job) storeDown(err error) {
	delay := max(j.w.cfg.Backoff(j.task.Attempt), 0)
	j.logger().Error("flows: progress store failed; giving the task back", "err", err, "retry_in", delay)
	j.giveBack(time.Now().Add(delay))
}

func (j *job) ack() {
	ctx := j.op()
	if err := j.w.backend.Ack(ctx, j.lease); err != nil {
		j.logger().Warn("flows: acknowledging the task failed", "err", err)
	}
}

// bury acknowledges the FAILED task and keeps it in the dead-letter set.
// On failure the task stays leased; the worker that takes it over once the
// lease passes buries it (see handle).
func (j *job) bury(reason string) {
	ctx := j.op()
	if err := j.w.backend.Bury(ctx, j.lease, reason); err != nil {
		j.logger().Warn("flows: burying the failed task failed", "err", err)
	}
}

func (j *job) giveBack(at time.Time) { j.w.giveBack(j.base, j.lease, at) }

func (w *Worker) giveBack(base context.Context, l *Lease, at time.Time) {
	ctx, cancel := context.WithTimeout(base, opTimeout)
	defer cancel()
	if err := w.backend.Retry(ctx, l, at); err != nil {
		w.log.Warn("flows: giving the task back failed", "task_id", l.Task.ID, "err", err)
	}
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
