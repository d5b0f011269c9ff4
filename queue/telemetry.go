package queue

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/telemetry"
	"github.com/flowsrun/flows/progress"
)

// Names of the spans and instruments of the queue (see the package
// documentation, "Tracing and metrics").
const (
	spanEnqueue = "flows.enqueue"
	spanRequeue = "flows.requeue"
	spanRun     = "flows.run"

	metricEnqueued = "flows.tasks.enqueued"
	metricStarted  = "flows.tasks.started"
	metricEnded    = "flows.tasks.ended"
	metricDuration = "flows.task.run.duration"
	metricPickup   = "flows.task.pickup.latency"
	metricEvents   = "flows.events.published"
	metricDepth    = "flows.queue.depth"
)

// Outcomes of a run, the flows.run.outcome attribute of the run duration.
const (
	outcomeSuccess = "success"
	outcomeFailure = "failure"
	outcomeRetry   = "retry" // given back: to retry, or for another worker
)

// durationBuckets are the bounds (in seconds) of the duration histograms:
// from a millisecond to an hour, for flows from no-ops to long agents.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// histogram makes a histogram of durations in seconds, logging an error
// of the meter (an SDK returns one for a name or option it refuses) and
// using a no-op histogram if it returned none.
func histogram(m metric.Meter, log *slog.Logger, name, desc string) metric.Float64Histogram {
	h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		log.Warn("flows: making a metric instrument failed", "instrument", name, "err", err)
	}
	if h == nil {
		h, _ = noop.Meter{}.Float64Histogram(name)
	}
	return h
}

const descEnded = "Tasks that reached a terminal state, by flow and state (SUCCESS or FAILURE)."

// brokerTelemetry is what a Broker traces and measures.
type brokerTelemetry struct {
	tracer   *telemetry.Tracer
	metrics  *telemetry.Metrics
	enqueued *telemetry.Counter[string]    // by flow
	ended    *telemetry.Counter[[2]string] // by flow and state
}

func newBrokerTelemetry(cfg BrokerConfig, backend Backend) *brokerTelemetry {
	ms := telemetry.NewMetrics(cfg.MeterProvider)
	m := ms.Meter
	t := &brokerTelemetry{
		tracer:   telemetry.NewTracer(cfg.TracerProvider),
		metrics:  ms,
		enqueued: telemetry.NewCounter(ms, cfg.Logger, metricEnqueued, "{task}", "Tasks accepted by the broker, by flow (a repeated idempotency key's task once).", flowAttrs),
		ended:    telemetry.NewCounter(ms, cfg.Logger, metricEnded, "{task}", descEnded, endAttrs),
	}
	if d, ok := backend.(DepthReader); ok {
		g := &depthGauge{backend: d, log: cfg.Logger}
		_, err := m.Int64ObservableGauge(metricDepth, metric.WithUnit("{task}"),
			metric.WithDescription("Tasks in the queue: ready to run, delayed (due later or waiting for a retry), running (leased to a worker) and hooks_waiting (ended, waiting to run their finish hooks again)."),
			metric.WithInt64Callback(g.observe))
		if err != nil {
			cfg.Logger.Warn("flows: making a metric instrument failed", "instrument", metricDepth, "err", err)
		}
	}
	return t
}

// depthGauge observes flows.queue.depth, read from the backend at each
// collection.
type depthGauge struct {
	backend DepthReader
	log     *slog.Logger
	// failing is set while the depth cannot be read: from the first read
	// that failed to the next that did not.
	failing atomic.Bool
}

// depthProbeTimeout bounds a read of the depth while the reads fail.
const depthProbeTimeout = time.Second

// depthStates are the flows.queue.state of the depth's four counts.
var depthStates = [...]metric.ObserveOption{
	metric.WithAttributeSet(attribute.NewSet(telemetry.Where.String("ready"))),
	metric.WithAttributeSet(attribute.NewSet(telemetry.Where.String("delayed"))),
	metric.WithAttributeSet(attribute.NewSet(telemetry.Where.String("running"))),
	metric.WithAttributeSet(attribute.NewSet(telemetry.Where.String("hooks_waiting"))),
}

// observe is the gauge's callback. A depth it cannot read (the backend
// unreachable) it observes as nothing, so that no stale or made-up count
// is exported, and returns no error: the SDK would hand one to the global
// error handler at every collection (by default the standard logger,
// once per scrape for as long as Redis is down), and a periodic reader
// would export none of the other metrics of that collection. It logs
// through the broker's Logger instead, once when the reads start to fail
// and once when they work again. A collection while the backend is down
// still tries, so that the gauge comes back at the first collection after
// the backend does, but waits for the backend's answer only
// depthProbeTimeout: a read that fails first has the backend's operation
// timeout (redisbackend.Config.OpTimeout), and an unreachable backend
// would otherwise hold every scrape or export of the outage that long.
func (g *depthGauge) observe(ctx context.Context, o metric.Int64Observer) error {
	limit := opTimeout
	if g.failing.Load() {
		limit = depthProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	n, err := g.backend.Depth(ctx)
	if err != nil {
		if g.failing.CompareAndSwap(false, true) {
			g.log.Warn("flows: reading the queue depth failed; flows.queue.depth reports nothing until it works again",
				"instrument", metricDepth, "err", redact.Error(err))
		}
		return nil
	}
	if g.failing.CompareAndSwap(true, false) {
		g.log.Info("flows: reading the queue depth works again", "instrument", metricDepth)
	}
	o.Observe(n.Ready, depthStates[0])
	o.Observe(n.Delayed, depthStates[1])
	o.Observe(n.Running, depthStates[2])
	o.Observe(n.HooksWaiting, depthStates[3])
	return nil
}

// startSpan starts the producer span of a new task t and records its
// context in t.
func (bt *brokerTelemetry) startSpan(ctx context.Context, name string, t *Task, link trace.SpanContext) (context.Context, trace.Span) {
	tr := bt.tracer.Active()
	if tr == nil {
		// Nothing traces here; the task still carries the trace it was
		// enqueued in, if any, so that a worker that traces joins it.
		t.TraceParent, t.TraceState = telemetry.Inject(ctx)
		return ctx, telemetry.NoSpan
	}
	var span trace.Span
	if link.IsValid() {
		ctx, span = tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(trace.Link{SpanContext: link}))
	} else {
		ctx, span = tr.Start(ctx, name, telemetry.KindProducer...)
	}
	if span.IsRecording() {
		attrs := []attribute.KeyValue{telemetry.TaskID.String(t.ID), telemetry.Flow.String(t.Flow)}
		if t.RequeuedFrom != "" {
			attrs = append(attrs, attribute.String("flows.task.requeued_from", t.RequeuedFrom))
		}
		span.SetAttributes(attrs...)
	}
	t.TraceParent, t.TraceState = telemetry.Values(span.SpanContext())
	return ctx, span
}

// endSpan ends span with err's status, and counts the task when it was
// accepted, unless the Enqueue repeated an idempotency key whose task was
// enqueued before (repeat): that task was counted then, and its runs are
// children of that enqueue's span, not of this one (which says so with
// flows.task.repeat).
//
// The status carries err's text redacted (redact.Text), as a run's span
// does: a trace backend keeps it, and the errors of a store or backend
// (a driver's, an HTTP client's) may quote a URL with its credentials.
func (bt *brokerTelemetry) endSpan(ctx context.Context, span trace.Span, t *Task, err error, repeat bool) {
	switch {
	case err != nil:
		if span.IsRecording() {
			span.SetStatus(codes.Error, redact.Text(err.Error()))
		}
	case repeat:
		span.SetAttributes(attrRepeat)
	default:
		bt.enqueued.Add(t.Flow, 1)
	}
	span.End()
}

// attrRepeat marks the enqueue span of a repeated idempotency key.
var attrRepeat = attribute.Bool("flows.task.repeat", true)

// workerTelemetry is what a Worker traces and measures.
type workerTelemetry struct {
	tracer   *telemetry.Tracer
	metrics  *telemetry.Metrics
	started  *telemetry.Counter[string]    // by flow
	ended    *telemetry.Counter[[2]string] // by flow and state
	events   *telemetry.Counter[progress.EventType]
	duration metric.Float64Histogram
	pickup   metric.Float64Histogram
	// eventCells are the counts of the event types the library writes
	// (see countEvents), flows those of each flow.
	eventCells [5]*telemetry.Cell
	flows      telemetry.Cache[string, *flowMetrics]
}

// flowMetrics is what a worker measures of one flow, made on its first
// task: the counts and attribute sets a run of it uses, found with one
// lookup per run instead of one per measurement.
type flowMetrics struct {
	started  *telemetry.Cell
	success  *telemetry.Cell // ended SUCCESS
	failure  *telemetry.Cell // ended FAILURE
	pickup   []metric.RecordOption
	duration [3][]metric.RecordOption // by outcome: success, failure, retry
}

func newWorkerTelemetry(cfg WorkerConfig) *workerTelemetry {
	ms := telemetry.NewMetrics(cfg.MeterProvider)
	m := ms.Meter
	log := cfg.Logger
	t := &workerTelemetry{
		tracer:  telemetry.NewTracer(cfg.TracerProvider),
		metrics: ms,
		started: telemetry.NewCounter(ms, log, metricStarted, "{run}", "Runs of flows started by workers, by flow: one per attempt.", flowAttrs),
		ended:   telemetry.NewCounter(ms, log, metricEnded, "{task}", descEnded, endAttrs),
		events: telemetry.NewCounter(ms, log, metricEvents, "{event}",
			"Progress events recorded by workers, by type (state, status, progress, step, token).",
			func(e progress.EventType) []attribute.KeyValue {
				return []attribute.KeyValue{telemetry.EventType.String(string(e))}
			}),
		duration: histogram(m, log, metricDuration,
			"Time a worker spent on one run of a flow, by flow and outcome (success, failure, retry)."),
		pickup: histogram(m, log, metricPickup,
			"Time from when a task was ready to when a worker leased it, first attempts only, by flow."),
	}
	for i, typ := range [...]progress.EventType{progress.EventState, progress.EventStatus,
		progress.EventProgress, progress.EventStep, progress.EventToken} {
		t.eventCells[i] = t.events.Cell(typ)
	}
	t.flows.New = func(flow string) *flowMetrics {
		set := func(kvs ...attribute.KeyValue) []metric.RecordOption {
			return telemetry.NewOptions(kvs...).Record
		}
		f := telemetry.Flow.String(flow)
		return &flowMetrics{
			started: t.started.Cell(flow),
			success: t.ended.Cell([2]string{flow, string(progress.StateSuccess)}),
			failure: t.ended.Cell([2]string{flow, string(progress.StateFailure)}),
			pickup:  set(f),
			duration: [3][]metric.RecordOption{
				set(f, telemetry.Outcome.String(outcomeSuccess)),
				set(f, telemetry.Outcome.String(outcomeFailure)),
				set(f, telemetry.Outcome.String(outcomeRetry)),
			},
		}
	}
	t.flows.Max = telemetry.MaxOptions
	return t
}

func flowAttrs(flow string) []attribute.KeyValue {
	return []attribute.KeyValue{telemetry.Flow.String(flow)}
}

func endAttrs(k [2]string) []attribute.KeyValue {
	return []attribute.KeyValue{telemetry.Flow.String(k[0]), telemetry.State.String(k[1])}
}

// countEvents counts the events a worker recorded: those of the
// library's types by a switch on each event's type into local counts,
// added to their cells once per type; any other type in its cell, found
// by a lookup.
func (wt *workerTelemetry) countEvents(events []progress.Event) {
	if !wt.metrics.Active() {
		return
	}
	var n [len(wt.eventCells)]int64
	for i := range events {
		switch typ := events[i].Type; typ {
		case progress.EventState:
			n[0]++
		case progress.EventStatus:
			n[1]++
		case progress.EventProgress:
			n[2]++
		case progress.EventStep:
			n[3]++
		case progress.EventToken:
			n[4]++
		default:
			wt.events.Add(typ, 1)
		}
	}
	for i, c := range n {
		if c != 0 {
			wt.eventCells[i].Add(c)
		}
	}
}

// countingStore is a worker's progress store: it counts the events it
// records (flows.events.published).
type countingStore struct {
	progress.Store
	tel *workerTelemetry
}

func (s countingStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	last, err := s.Store.Append(ctx, taskID, events...)
	if err == nil {
		s.tel.countEvents(events)
	}
	return last, err
}

// startSpan starts the span of the job's lease, a child of the span that
// enqueued the task (so each attempt joins the task's trace), and puts it
// in j.base for the flow and what the worker does for the task. It
// records the pickup latency of a first attempt.
func (j *job) startSpan() {
	wt, t := j.w.tel, j.task
	if wt.metrics.Active() {
		j.fm = wt.flows.Get(t.Flow)
		if t.Attempt == 1 && !t.Cancelled {
			ready := t.EnqueuedAt
			if t.RunAt.After(ready) {
				ready = t.RunAt
			}
			if !ready.IsZero() {
				// No context: an exemplar of a pickup would name no trace
				// worth the lookup.
				wt.pickup.Record(context.Background(), j.pickup(ready).Seconds(), j.fm.pickup...)
			}
		}
	}
	tr := wt.tracer.Active()
	if tr == nil {
		j.span = telemetry.NoSpan
		return
	}
	if telemetry.Unsampled(t.TraceParent) {
		// The task's trace was not sampled where it was enqueued: its
		// runs are not traced either, and start no span (the SDK would
		// make a non-recording one, and a context for it). The flow
		// still runs in that trace, so that what it traces is not
		// sampled on its own; the trace context is read only if the
		// flow asks for it (see remoteSpan).
		j.span = telemetry.NoSpan
		j.parent.traceparent, j.parent.tracestate = t.TraceParent, t.TraceState
		j.base = trace.ContextWithSpan(j.base, &j.parent)
		return
	}
	ctx := j.base
	if parent := telemetry.SpanContext(t.TraceParent, t.TraceState); parent.IsValid() {
		j.parent.sc = parent
		ctx = trace.ContextWithSpan(ctx, &j.parent)
	}
	// The run's attributes are set when it ends, all at once (see
	// endSpan): one copy into the span instead of two.
	j.base, j.span = tr.Start(ctx, spanRun, telemetry.KindConsumer...)
}

// pickup returns the time from ready to when the worker leased the
// job's task: its lease's deadline less the lease's duration, since a
// backend leases a task until now+lease (Backend.Fetch), which spares a
// clock read per task; now if the backend gave no deadline. In Unix
// nanoseconds, as ready comes from another process, without a monotonic
// clock reading.
func (j *job) pickup(ready time.Time) time.Duration {
	var leased int64
	if d := j.lease.Deadline; !d.IsZero() {
		leased = d.UnixNano() - int64(j.w.cfg.Lease)
	} else {
		leased = time.Now().UnixNano()
	}
	return max(time.Duration(leased-ready.UnixNano()), 0)
}

// runStarted notes the start of the flow's run, for the finish hooks and
// the run's duration, and counts it.
func (j *job) runStarted() {
	// The time is read only for those who use it: a nanosecond clock
	// read per task is not free.
	if len(j.w.hooks) > 0 || j.fm != nil || j.span.IsRecording() {
		j.startedAt = time.Now()
	}
	if j.fm != nil {
		j.fm.started.Add(1)
	}
}

// runFailed marks the span of a run whose flow returned err: with the
// text the task's log and status get (errText, redacted), cut to the
// worker's MaxReportBytes as the failure reason that replaces it when the
// task fails for good (see noteEnd) is, so that a retried run's status
// is no longer than a failed one's.
func (j *job) runFailed(err error) {
	if j.span.IsRecording() {
		j.span.SetStatus(codes.Error, j.w.cut(errText(err)))
	}
}

// noteEnd notes that the job recorded the task's terminal state: the
// ended counter, and the span's status (reason is a FAILURE's).
func (j *job) noteEnd(state progress.State, reason string) {
	j.endState = state
	switch {
	case j.fm == nil:
	case state == progress.StateSuccess:
		j.fm.success.Add(1)
	case state == progress.StateFailure:
		j.fm.failure.Add(1)
	default:
		j.w.tel.ended.Add([2]string{j.task.Flow, string(state)}, 1)
	}
	if state == progress.StateFailure {
		j.span.SetStatus(codes.Error, reason)
	}
}

// endSpan ends the job's span, with the run's duration and outcome when
// the flow ran.
func (j *job) endSpan() {
	var outcome string
	var byOutcome int // the index of outcome in flowMetrics.duration
	switch j.endState {
	case progress.StateSuccess:
		outcome = outcomeSuccess
	case progress.StateFailure:
		outcome, byOutcome = outcomeFailure, 1
	default:
		if !j.startedAt.IsZero() {
			outcome, byOutcome = outcomeRetry, 2
		}
	}
	if !j.startedAt.IsZero() && j.fm != nil {
		// The run's context, for an exemplar naming its trace, only when
		// there is one to name: else the SDK would look for it through
		// every layer of the context, for nothing.
		ctx := context.Background()
		if j.span.IsRecording() {
			ctx = j.base
		}
		j.w.tel.duration.Record(ctx, time.Since(j.startedAt).Seconds(), j.fm.duration[byOutcome]...)
	}
	if j.span.IsRecording() {
		t := j.task
		attrs := [6]attribute.KeyValue{telemetry.TaskID.String(t.ID), telemetry.Flow.String(t.Flow),
			telemetry.Attempt.Int(t.Attempt), telemetry.Worker.String(j.w.cfg.Name)}
		n := 4
		if outcome != "" {
			attrs[n] = telemetry.Outcome.String(outcome)
			n++
		}
		if j.endState != "" {
			attrs[n] = telemetry.State.String(string(j.endState))
			n++
		}
		j.span.SetAttributes(attrs[:n]...)
	}
	j.span.End()
}

// remoteSpan is the span a task's trace context names (see
// telemetry.SpanContext): the parent of the task's runs, a span of the
// process that enqueued it, which records nothing here. It is what
// trace.ContextWithRemoteSpanContext puts in a context, kept in the job
// instead of a value of its own for each run. The trace context of a
// task whose trace was not sampled is read only when asked for: a flow
// that starts no span never needs it.
type remoteSpan struct {
	tracenoop.Span
	sc trace.SpanContext // when traceparent is ""
	// traceparent and tracestate are the task's, to read on first use
	// into lazy.
	traceparent, tracestate string
	lazy                    atomic.Pointer[trace.SpanContext]
}

// SpanContext returns the span context the task carried; invalid if its
// traceparent is malformed.
func (s *remoteSpan) SpanContext() trace.SpanContext {
	if s.traceparent == "" {
		return s.sc
	}
	if sc := s.lazy.Load(); sc != nil {
		return *sc
	}
	sc := telemetry.SpanContext(s.traceparent, s.tracestate)
	s.lazy.Store(&sc)
	return sc
}

// countingFinisher is a worker's one-step path to a task's end: it counts
// the events it records, as countingStore does.
type countingFinisher struct {
	finisher
	tel *workerTelemetry
}

func (f countingFinisher) AppendAndAck(ctx context.Context, l *Lease, events ...progress.Event) (string, bool, error) {
	last, acked, err := f.finisher.AppendAndAck(ctx, l, events...)
	if err == nil {
		f.tel.countEvents(events)
	}
	return last, acked, err
}

// countingAppender is a worker's path to a task's events when its backend
// is the store and takes the task's record (taskAppender): it counts the
// events it records, as countingStore does.
type countingAppender struct {
	taskAppender
	tel *workerTelemetry
}

func (a countingAppender) AppendTask(ctx context.Context, t *Task, events ...progress.Event) (string, error) {
	last, err := a.taskAppender.AppendTask(ctx, t, events...)
	if err == nil {
		a.tel.countEvents(events)
	}
	return last, err
}
