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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

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
	// DefaultMaxHandBacks: with DefaultBackoff, a task handed back
	// because the progress store cannot be reached keeps coming back for
	// about eight hours.
	DefaultMaxHandBacks = 100
	// DefaultMaxHookRetries: with DefaultBackoff, a task whose finish
	// hooks keep asking to run again (ErrRetryHooks) comes back for
	// about a day.
	DefaultMaxHookRetries = 300
)

// WorkerConfig configures a Worker. The zero value is usable: each zero
// field takes the default its comment names. A negative count or
// duration can only be a mistake, and makes NewWorker panic, naming the
// field; MaxReportBytes and MaxRunReportBytes, where it means no limit,
// aside.
type WorkerConfig struct {
	// Registry is where the flows named by tasks are looked up. Nil means
	// registry.Default. A task whose flow it lacks ends FAILURE ("unknown
	// flow"), unless the flow is one of this module's own, named
	// "flows." (notify's "flows.notify"; registry.Register refuses such
	// names for the host's flows): such a task is handed back
	// unrun and not counted, after the backoff of its hand-backs so far
	// plus one, for a worker that has the flow, and ends FAILURE only
	// after MaxHandBacks hand-backs.
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
	// Lease/3, so a long flow is never handed to another worker; it does
	// so on a timer of its own, not with its heartbeats, so a Lease
	// shorter than the Heartbeat is kept all the same. If the worker
	// dies, a backend with a worker registry has others take its
	// tasks back once it misses its heartbeats (see Heartbeat), and any
	// backend once Lease passes. Zero means DefaultLease.
	Lease time.Duration

	// ShutdownGrace is how long Run lets in-flight flows finish once its
	// context ends. Then their contexts are cancelled, and a task whose
	// flow does not come back with a result (it fails, or has not returned
	// within AbandonAfter) is given back to the queue to run again
	// elsewhere. The interrupted run does not count as one of the task's
	// Task.MaxAttempts: a worker that stops is no fault of the flow's (a
	// worker that dies is another matter: its run counts, since the flow
	// may have killed it). It counts as a hand-back (see MaxHandBacks).
	// Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration

	// MaxHandBacks bounds the hand-backs of one task that do not count as
	// attempts (AttemptEnd.Counts): its worker shut down, the progress
	// store could not record the task, the backend could not be reached
	// (see Heartbeat). Each such hand-back gives the task
	// one run more than its MaxAttempts; the worker that leases a task
	// handed back more often than this ends it FAILURE ("gave up after
	// 101 hand-backs: progress store unavailable"), so that a store that
	// refuses one task for good, or a flow that never finishes between
	// two deployments, does not keep it going round for ever. A task
	// handed back because the store could not be reached waits the
	// backoff (its flow's, else Backoff) of n before the next try, n
	// being its hand-backs so far plus one. Zero means
	// DefaultMaxHandBacks.
	MaxHandBacks int

	// AbandonAfter is how long the worker waits for a flow to return once
	// the flow's context has been cancelled (task cancelled, time limit
	// passed, shutdown). Past it, the worker records the outcome anyway
	// (ends the task, or hands it back at shutdown) and frees the slot;
	// the flow's goroutine is left to finish on its own. What the flow
	// reported until then is recorded first; whatever it reports
	// afterwards is refused (an error wrapping ErrLeaseLost, logged), so
	// that nothing of it lands in the log of the task's next attempt.
	// Zero means DefaultAbandonAfter.
	AbandonAfter time.Duration

	// Backoff gives the delay before a failed task's next attempt; its
	// argument is the attempt that failed (1 for the first run), counting
	// the attempts that count (hand-backs aside, see MaxHandBacks). A
	// flow error wrapped with flow.RetryAfter waits at least the delay it
	// asks for. Nil means DefaultBackoff.
	Backoff func(attempt int) time.Duration

	// OnFinish are hooks called, in this order, once for each task this
	// worker sees reach SUCCESS or FAILURE, after the terminal state is
	// recorded and before the task is acknowledged (or buried): see
	// FinishHook and Finished.
	//
	// They run on the worker that ends the task, also for a task that
	// ends without running (cancelled while pending, unknown flow,
	// attempts spent). They are at least once: a worker that dies
	// between recording the end and acknowledging the task leaves it
	// leased, and the worker that leases it next finds it ended and calls
	// the hooks then (Finished.FoundEnded), so a hook must be idempotent
	// (key its effects on Task.ID). A task whose progress record has
	// expired is dropped without hooks.
	//
	// A hook's error or panic is logged and changes nothing: the task's
	// state stands, and it is acknowledged all the same; unless the error
	// wraps ErrRetryHooks. Then the worker gives the ended task back to
	// the backend instead (Backend.Retry with EndHooksPending, which
	// spends none of its attempts and hand-backs), to be leased again
	// after Backoff of n, n being its hook retries so far plus one (with
	// DefaultBackoff: 1 s, doubling up to 5 min); the worker that leases
	// it finds it ended and calls every hook again, FoundEnded set, and
	// acknowledges it once none asks again, or past MaxHookRetries. The
	// flow does not run again and the task's state does not change. So a
	// hook that writes to a database that is away for hours keeps the
	// task coming back until the database is there again; each pause
	// costs a lease (on Redis, the fetch and a retry script) and one call
	// of the hooks per task. The hooks of a task get FinishHookTimeout in
	// all, each time. They run on the goroutines the worker keeps for
	// flows (see Worker), and should leave theirs as they found it. A
	// hook that ends its goroutine (runtime.Goexit) is logged, and the
	// hooks after it are skipped. With hooks the worker records a
	// success, reads the final snapshot, runs the hooks and then
	// acknowledges the task: on Redis, two round trips more per task
	// than without, where the success and its acknowledgement go in one.
	// Without hooks nothing of that happens. A nil hook makes NewWorker
	// panic.
	OnFinish []FinishHook

	// FinishHookTimeout bounds the time the hooks of one task take
	// together (see OnFinish). Zero means Lease/3. It must not pass
	// Lease/2, so that the task's lease outlasts its hooks (NewWorker
	// panics otherwise).
	FinishHookTimeout time.Duration

	// MaxHookRetries bounds the times one task is given back for its
	// finish hooks to run again (see OnFinish, Task.HookRetries). Past
	// it the worker logs that it gives up on the hooks and acknowledges
	// (or buries) the task as it would have. Zero means
	// DefaultMaxHookRetries.
	MaxHookRetries int

	// Heartbeat is how often the worker writes itself into the backend's
	// worker registry (see WorkerRegistry), once per interval whatever
	// the number of tasks it runs. Zero means DefaultHeartbeat (1 s). A
	// backend without a registry is not written to.
	//
	// It is also how fast a dead worker's tasks come back: once a worker
	// has missed MissedBeats heartbeats (3 s by default), the next
	// heartbeat of another worker takes its leases back and its tasks run
	// again, their next attempt saying that the worker was lost
	// (EndWorkerLost). Only a worker whose own heartbeats have come
	// without a gap for MissedBeats intervals judges others, so that after
	// an outage each has as long to beat again (see WorkerRegistry). A
	// worker whose heartbeats stop reaching the
	// backend for MissedBeats-½ intervals, by its own clock (from its
	// first heartbeat until one gets through: one whose reply it did not
	// get may have been recorded all the same), cancels its
	// flows before anyone may take them back, and refuses what they
	// report afterwards: a worker that was frozen and wakes up never runs
	// a task beside its new attempt (see the README, Recovery in seconds).
	// If its heartbeats kept going out and failing meanwhile (Redis down,
	// a network split), the lapse is no fault of its flows': it hands
	// their tasks back once a heartbeat gets through again (for at most a
	// Lease), without spending an attempt (EndBackendDown); unless another
	// worker, in contact all along, took them over meanwhile, which counts
	// as for any lost worker (EndWorkerLost). A worker that did not get to send them (frozen,
	// starved) hands its tasks back at once, and the run counts. Either
	// way, a worker that has lapsed leases no new task until one of its
	// heartbeats gets through again, and a task it holds before its flow
	// starts (a fetch already waiting as it lapsed leased it) does not
	// run before then. If one gets through in time (within a quarter of
	// an interval of the lapse, and while more than a third of the
	// task's lease is left) and the lease is still the worker's (it
	// extends it to know), the task runs on that lease, with no
	// hand-back; a lease taken back meanwhile is let go unrun. Else the
	// task is handed back then (EndHandedBack, Lease.NoRun), before
	// another worker may take the lease back as EndWorkerLost, or the
	// lease ends (EndLeaseExpired), and spends no attempt; if the
	// backend does not answer, again once a heartbeat gets through.
	// The worker waits for a heartbeat's reply as long as it can still
	// renew the window, less a quarter of an interval (see the README,
	// Recovery in seconds): a reply that a loaded host is slow to read
	// still counts.
	// A shorter interval brings the tasks back sooner for one script per
	// interval per worker; a worker whose heartbeats can stall for longer
	// than MissedBeats intervals (an overloaded host) needs a longer one.
	Heartbeat time.Duration

	// Checkpoints is where the flows' completed steps are recorded and
	// replayed from (flow.Step, and every model and tool call of a
	// flow/lcflow flow), so that a later attempt of a task does not run
	// them again. Nil means the progress store, when it is a
	// progress.CheckpointStore (progress.MemoryStore and the Redis
	// backend are); otherwise nothing is recorded, every attempt runs
	// every step, and NewWorker logs a warning. A store that wraps
	// another hides its checkpoints: pass them here.
	Checkpoints progress.CheckpointStore

	// Logger receives the worker's logs. Nil means slog.Default().
	Logger *slog.Logger

	// TracerProvider traces each lease of a task as a span (flows.run), a
	// child of the span that enqueued the task (Task.TraceParent): the
	// flow runs with that span in its context, so the spans it starts
	// (flow/lcflow's steps, tools and model calls among them) join the
	// task's trace. A task enqueued in a trace that was not sampled (its
	// traceparent's sampled flag is off) is not traced when it runs,
	// whatever this provider's sampler would decide: the decision is made
	// once per task, where it is enqueued, and the run starts no span (the
	// flow still runs in that trace, so what it traces is not sampled
	// either under a parent-based sampler). Nil means the global provider
	// (otel.GetTracerProvider), which does nothing unless one is installed.
	TracerProvider trace.TracerProvider

	// MeterProvider receives the worker's metrics: runs started, tasks
	// ended by state, run durations, pickup latency and progress events
	// recorded (see the package documentation). Nil means the global
	// provider (otel.GetMeterProvider), which does nothing unless one is
	// installed.
	MeterProvider metric.MeterProvider

	// MaxReportBytes is the most bytes of text and JSON one report of a
	// flow may carry (see progress.Event.Size): a Log message, a
	// ToolResult's data with its step and tool names, a Status or
	// Progress line, a Token. A report over it is not recorded: a log
	// entry takes its place, saying what was dropped, its size and the
	// limit, and the worker logs a warning for the first one of each
	// run (see progress.TaskReporter). A result over it (as JSON) fails
	// the task for good ("result of 2097152 bytes is over the limit of
	// 1048576 bytes per report"), and a failure's reason, or a retry's,
	// is cut to it. A step's output over it (flow.Step, and the model
	// and tool calls of flow/lcflow) is not recorded as a checkpoint, so
	// that a later attempt runs that step again (see
	// flow.CheckpointsConfig.MaxOutputBytes). Zero means
	// progress.DefaultMaxReportBytes (1 MiB); a
	// negative value means no limit, as before the limit existed, which
	// lets one flow's huge reports hold up the store for every other
	// task (see the README, Reporting progress).
	MaxReportBytes int

	// MaxRunReportBytes is the most bytes the reports of one run of a
	// flow may count in all, each its text and JSON (counted as for
	// MaxReportBytes) and progress.ReportOverheadBytes more, so that a
	// flow that reports large outputs again and again, logs what its
	// callers send, or logs empty lines in a loop, does not grow its
	// task's log, which every snapshot read and every SSE client that
	// connects from the start reads whole, without bound. The first
	// report that would take the run past it is replaced by a log
	// entry saying so and how to raise it, and the worker logs a
	// warning; the run's later log entries, tool results, status lines
	// and tokens are dropped. Its progress percentages (without their
	// status lines, when they change, progress.ProgressPastRunLimit
	// times at most), state changes and result are still recorded, and
	// its task ends as it would have, SUCCESS or FAILURE (see
	// progress.TaskReporter). It bounds one run: a task run again (a
	// retry, a hand-back) may record as much again. Zero means
	// progress.RunReports (16) times MaxReportBytes: 16 MiB, or no
	// limit when MaxReportBytes is negative; a negative value means no
	// limit (see the README, The size of a run's reports).
	MaxRunReportBytes int
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
//     more than Task.MaxAttempts times (its runs keep killing workers)
//     not counting the hand-backs that were no fault of its flow, or if
//     those number more than WorkerConfig.MaxHandBacks;
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
// <id>" as it first starts; one that resumes it (Task.Resume) adds
// ", resuming its completed steps", and its flows replay the steps the
// dead task completed (see RequeueOptions.Resume).
//
// A panic in a flow becomes FAILURE with the status "panic: <value>"; it
// never crashes the worker. A flow that ends its goroutine
// (runtime.Goexit, as testing's FailNow does) fails its attempt, as if
// it had returned an error.
//
// Flows and finish hooks run on goroutines the worker keeps while it
// runs, one call after another (a task's hooks most often on the
// goroutine its flow has just left), so that the stack grown by one is
// there for the next; so a flow or a hook should leave its goroutine as
// it found it, as a net/http handler does its connection's: no thread
// left locked (runtime.LockOSThread), goroutine labels set with pprof.Do
// rather than pprof.SetGoroutineLabels. A flow or hook that panics
// leaves its goroutine to the next; one that ends it, or that the worker
// stops waiting for (a flow abandoned, see WorkerConfig.AbandonAfter;
// hooks past FinishHookTimeout), takes it along.
type Worker struct {
	backend Backend
	store   progress.Store
	// fin and fetcher are set when the backend is the store and offers
	// the one-step path (see NewWorker).
	fin     finisher
	fetcher stateFetcher
	app     taskAppender // set when the backend is the store
	hooks   []FinishHook // WorkerConfig.OnFinish
	cfg     WorkerConfig
	log     *slog.Logger
	tel     *workerTelemetry

	running atomic.Bool
	ops     *opctx.Source // contexts of backend and store calls, set by Run
	pool    *pool         // the goroutines that run flows and hooks, set by Run
	// holding counts the tasks the worker holds, for its heartbeats.
	holding atomic.Int64
	// live is the worker's standing in the backend's registry; nil when
	// the backend keeps none (see liveness).
	live *liveness
	// gate admits the waiting tasks of limited flows; nil when the
	// backend admits them itself (see gatekeeper).
	gate *gatekeeper

	mu     sync.Mutex
	active map[string]*activeRun // running tasks by id
	// flowsStopped, once set by stopFlows, cancels every run, those
	// tracked later too; stopped is closed then (see stopSignal).
	flowsStopped error
	stopped      chan struct{}
	recent       map[string]time.Time // cancellations of tasks not running here, when heard

	// flowReturned, when set (by tests), is called as a flow's Run has
	// returned, before the worker receives its outcome.
	flowReturned func(taskID string)
}

// NewWorker returns a Worker that takes tasks from backend and records
// their progress in store. Zero fields of cfg take their defaults.
//
// A nil store means that backend is also the progress store (the Redis
// backend is): it must then implement progress.Store, or NewWorker
// panics. A backend that is its own store reads each task's state as it
// leases it, so a flow starts without waiting for its start to be
// recorded, and records a success and acknowledges it in one step: on
// Redis, a task then costs two round trips fewer. Passing the backend
// itself as store means the same. Any other store, a wrapper of the
// backend included, is used as it is and takes the longer path; NewWorker
// then logs a warning if the backend could have taken the shorter one.
//
// The worker uses what backend offers beyond Backend: WorkerRegistry,
// Retirer and Admitter. A wrapper of a backend must pass them on (see
// Admitter); NewWorker logs a warning when backend keeps no worker
// registry, as a wrapper that embeds Backend alone does.
// NewWorker panics on a nil backend, and on a negative count or duration
// in cfg (MaxReportBytes and MaxRunReportBytes aside, where it means no
// limit), naming the field.
func NewWorker(backend Backend, store progress.Store, cfg WorkerConfig) *Worker {
	for _, f := range []struct {
		name string
		v    int64
		d    bool // a time.Duration
	}{
		{"Concurrency", int64(cfg.Concurrency), false},
		{"Lease", int64(cfg.Lease), true},
		{"ShutdownGrace", int64(cfg.ShutdownGrace), true},
		{"MaxHandBacks", int64(cfg.MaxHandBacks), false},
		{"AbandonAfter", int64(cfg.AbandonAfter), true},
		{"FinishHookTimeout", int64(cfg.FinishHookTimeout), true},
		{"MaxHookRetries", int64(cfg.MaxHookRetries), false},
		{"Heartbeat", int64(cfg.Heartbeat), true},
	} {
		if f.v < 0 {
			v := fmt.Sprint(f.v)
			if f.d {
				v = time.Duration(f.v).String()
			}
			panic(fmt.Sprintf("queue: NewWorker: WorkerConfig.%s %s is negative (zero means the default)", f.name, v))
		}
	}
	if cfg.Registry == nil {
		cfg.Registry = registry.Default
	}
	if cfg.Name == "" {
		cfg.Name = defaultWorkerName()
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.AbandonAfter == 0 {
		cfg.AbandonAfter = DefaultAbandonAfter
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.MaxHandBacks == 0 {
		cfg.MaxHandBacks = DefaultMaxHandBacks
	}
	if cfg.MaxHookRetries == 0 {
		cfg.MaxHookRetries = DefaultMaxHookRetries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.FinishHookTimeout == 0 {
		cfg.FinishHookTimeout = cfg.Lease / 3
	}
	if cfg.MaxReportBytes == 0 {
		cfg.MaxReportBytes = progress.DefaultMaxReportBytes
	}
	if cfg.FinishHookTimeout > cfg.Lease/2 {
		panic(fmt.Sprintf("queue: NewWorker: FinishHookTimeout %s passes half the Lease (%s): the lease would end before the hooks", cfg.FinishHookTimeout, cfg.Lease))
	}
	hooks := slices.Clone(cfg.OnFinish)
	for i, h := range hooks {
		if h == nil {
			panic(fmt.Sprintf("queue: NewWorker: OnFinish[%d] is nil", i))
		}
	}
	s := resolveStore("NewWorker", true, backend, store, cfg.Logger)
	if cfg.Checkpoints == nil {
		var ok bool
		if cfg.Checkpoints, ok = s.store.(progress.CheckpointStore); !ok {
			cfg.Logger.Warn("flows: the progress store keeps no checkpoints, so durable steps are off: "+
				"a task that runs again runs every step again (flow.Step, lcflow's model and tool calls). "+
				"Set WorkerConfig.Checkpoints to the store that keeps them",
				"store", fmt.Sprintf("%T", s.store))
		}
	}
	warnHidden(backend, cfg.Logger)
	tel := newWorkerTelemetry(cfg)
	if len(hooks) > 0 {
		// The hooks run between the record of a success and its
		// acknowledgement: they cannot go in one step.
		s.fin = nil
	}
	fin := s.fin
	if fin != nil {
		fin = countingFinisher{finisher: fin, tel: tel}
	}
	app := s.app
	if app != nil {
		app = countingAppender{taskAppender: app, tel: tel}
	}
	w := &Worker{
		backend: backend,
		store:   countingStore{Store: s.store, tel: tel},
		fin:     fin,
		fetcher: s.fetcher,
		app:     app,
		hooks:   hooks,
		cfg:     cfg,
		tel:     tel,
		log:     cfg.Logger.With("worker", cfg.Name),
		active:  map[string]*activeRun{},
		recent:  map[string]time.Time{},
		stopped: make(chan struct{}),
	}
	if _, ok := backend.(WorkerRegistry); ok {
		w.live = newLiveness(w)
	}
	if _, ok := backend.(Admitter); ok {
		w.gate = newGatekeeper()
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
	if w.flowsStopped != nil {
		w.flowsStopped, w.stopped = nil, make(chan struct{})
	}
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
	stopBeating := w.beat(base)
	stopGates := w.keepGates(base)
	var inFlight sync.WaitGroup
	w.pool = newPool(w.cfg.Concurrency)
	w.fetchLoop(ctx, &inFlight, func(l leased) {
		w.holding.Add(1)
		defer w.holding.Add(-1)
		w.handle(base, l)
	})

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
	w.pool.close()
	stopListening()
	<-listening
	stopBeating()
	stopGates()
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
