package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/internal/telemetry"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// minRunAt and maxRunAt bound EnqueueOptions.RunAt: the earliest and
// latest times a task's record holds (as nanoseconds since 1970 in an
// int64, as the Redis backend keeps it).
var (
	minRunAt = time.Unix(0, math.MinInt64).UTC()
	maxRunAt = time.Unix(0, math.MaxInt64).UTC()
)

// Defaults used where a Broker's or a task's setting is zero.
const (
	DefaultMaxAttempts = 3
	DefaultTimeout     = 15 * time.Minute
)

// BrokerConfig configures a Broker. The zero value is usable.
type BrokerConfig struct {
	// Registry holds the flows Enqueue accepts, and checks their inputs
	// with: Enqueue refuses a flow it does not hold (an error wrapping
	// registry.ErrUnknownFlow) and inputs that fail the flow's schema
	// (flow.ErrInvalidInputs), the errors ssehttp answers with 404 and
	// 422, before anything is recorded. Flows registered with
	// registry.Internal are accepted: only a client of ssehttp may not
	// start them. It should hold the flows of the workers
	// (WorkerConfig.Registry), or the ones this process enqueues. Nil
	// means registry.Default.
	Registry *registry.Registry
	// MaxAttempts is the default number of runs a task gets (counting runs
	// cut short by a worker's death). Zero means DefaultMaxAttempts;
	// NewBroker panics on a negative value.
	MaxAttempts int
	// Timeout is the default time limit of one run. Zero means
	// DefaultTimeout; NewBroker panics on a negative value.
	Timeout time.Duration
	// Logger receives the Broker's warnings. Nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider traces Enqueue and Requeue: each makes a span
	// (flows.enqueue, flows.requeue) whose W3C trace context the new task
	// carries (Task.TraceParent), so that its runs on any worker join the
	// same trace. Nil means the global provider (otel.GetTracerProvider),
	// which does nothing unless one is installed.
	TracerProvider trace.TracerProvider
	// CallerLimits bound the starts of each caller (EnqueueOptions.Caller):
	// a rate, and a cap on its tasks waiting to start. An Enqueue over
	// one fails with a *CallerLimitError (ErrCallerLimit) and enqueues
	// nothing. The backend keeps the counts, so every Broker on one Redis
	// shares them; give them all the same limits. The zero value limits
	// nothing; DefaultCallerLimits returns generous ones. NewBroker panics
	// on a negative field.
	CallerLimits CallerLimits
	// MeterProvider receives the Broker's metrics: tasks enqueued, tasks
	// it ends itself (cancelled while pending, counted in
	// flows.tasks.ended as FAILURE), and the depth of the queue (see the
	// package documentation). Nil means the global provider
	// (otel.GetMeterProvider), which does nothing unless one is installed.
	MeterProvider metric.MeterProvider
}

// EnqueueOptions are the per-task settings of Enqueue. Zero fields take the
// Broker's defaults.
type EnqueueOptions struct {
	// MaxAttempts overrides the flow's registry.MaxAttempts and
	// BrokerConfig.MaxAttempts. Zero takes theirs; a negative value makes
	// Enqueue fail with ErrInvalidOptions.
	MaxAttempts int
	// Timeout overrides the flow's registry.Timeout and
	// BrokerConfig.Timeout. Zero takes theirs; a negative value makes
	// Enqueue fail with ErrInvalidOptions.
	Timeout time.Duration
	// RunAt delays the task's first run until then; the zero time means
	// now. It must lie between 1677-09-21 and 2262-04-11, the times a
	// task's record holds (nanoseconds since 1970 in an int64), or
	// Enqueue fails with ErrInvalidOptions.
	RunAt time.Time
	// Owner names the caller the task belongs to (Task.Owner); "" for
	// none. A task started by the host's own code for one of its users
	// should name that user, so that the user can follow it over HTTP.
	Owner string
	// IdempotencyKey, when not empty, makes Enqueue idempotent: while the
	// backend retains a task enqueued with the same key, Enqueue returns
	// that task's id and enqueues nothing, if flow and inputs are the same
	// (inputs compared as JSON, insignificant whitespace aside); with
	// another flow or other inputs it fails with ErrIdempotencyConflict.
	// The other options of a repeated call are ignored. Concurrent calls
	// with one key enqueue one task and all return its id. Keys are
	// scoped by Owner: the same key from two owners names two tasks. See
	// IdempotentID.
	IdempotencyKey string
	// Caller names who asks, for BrokerConfig.CallerLimits: usually the
	// Owner, or the client's address for an anonymous caller (ssehttp
	// passes "ip:" and the address, or its /64 network for IPv6, and for
	// a principal ssehttp.CallerName of its ID: the ID, with "id:" in
	// front when it begins with "ip:" or "id:", so that no user is
	// counted as an address). "" is subject to no caller limit.
	Caller string
}

// check refuses the values of o that can only be mistakes.
func (o *EnqueueOptions) check() error {
	if o.MaxAttempts < 0 {
		return fmt.Errorf("%w: EnqueueOptions.MaxAttempts %d is negative (zero takes the flow's or the Broker's)", ErrInvalidOptions, o.MaxAttempts)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("%w: EnqueueOptions.Timeout %v is negative (zero takes the flow's or the Broker's)", ErrInvalidOptions, o.Timeout)
	}
	if !o.RunAt.IsZero() && (o.RunAt.Before(minRunAt) || o.RunAt.After(maxRunAt)) {
		return fmt.Errorf("%w: EnqueueOptions.RunAt %s is out of range (%s to %s)", ErrInvalidOptions,
			o.RunAt.UTC().Format(time.RFC3339), minRunAt.Format(time.RFC3339), maxRunAt.Format(time.RFC3339))
	}
	return nil
}

// Broker accepts, cancels and looks up tasks, and re-queues dead ones. It
// is safe for concurrent use.
type Broker struct {
	backend Backend
	store   progress.Store
	cfg     BrokerConfig
	// creator is set when the backend is the store and offers the
	// one-step path.
	creator taskCreator
	// fresh is creator taking the id as free, when the backend offers
	// it: for the tasks whose id the Broker draws (NewID).
	fresh newCreator
	// once is creator refusing a taken id atomically, when the backend
	// offers it: for tasks with an idempotency key.
	once onceCreator
	tel  *brokerTelemetry
	// app is set when the backend is the store and appends to tasks it
	// is given the record of.
	app taskAppender
	// admitter checks caller limits (nil when BrokerConfig.CallerLimits
	// is off); limCreator is creator checking them in the same step, when
	// the backend offers it.
	admitter   callerAdmitter
	limCreator limitedCreator
	// starts is set when the store is not the backend and the backend
	// tells whether a start is done (see enqueuedBefore).
	starts startChecker
}

// NewBroker returns a Broker that queues tasks in backend and records
// their progress in store. Zero fields of cfg take their defaults.
//
// A nil store means that backend is also the progress store (the Redis
// backend is): it must then implement progress.Store, or NewBroker
// panics. A backend that is its own store records a new task and queues
// it in one step (one round trip on Redis) instead of two. Passing the
// backend itself as store means the same. Any other store, a wrapper of
// the backend included, is used as it is and takes two steps; NewBroker
// then logs a warning if the backend could have taken one. NewBroker
// panics on a nil backend.
func NewBroker(backend Backend, store progress.Store, cfg BrokerConfig) *Broker {
	if cfg.MaxAttempts < 0 {
		panic(fmt.Sprintf("queue: NewBroker: BrokerConfig.MaxAttempts %d is negative (zero means DefaultMaxAttempts)", cfg.MaxAttempts))
	}
	if cfg.Timeout < 0 {
		panic(fmt.Sprintf("queue: NewBroker: BrokerConfig.Timeout %v is negative (zero means DefaultTimeout)", cfg.Timeout))
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = registry.Default
	}
	if err := cfg.CallerLimits.Validate(); err != nil {
		panic("queue: NewBroker: " + err.Error())
	}
	cfg.CallerLimits = cfg.CallerLimits.withDefaults()
	s := resolveStore("NewBroker", false, backend, store, cfg.Logger)
	b := &Broker{backend: backend, store: s.store, cfg: cfg, creator: s.creator, app: s.app, tel: newBrokerTelemetry(cfg, backend)}
	b.once, _ = s.creator.(onceCreator)
	b.fresh, _ = s.creator.(newCreator)
	if !s.self {
		b.starts, _ = backend.(startChecker)
	}
	if cfg.CallerLimits.On() {
		var ok bool
		if b.admitter, ok = backend.(callerAdmitter); !ok {
			panic(fmt.Sprintf("queue: NewBroker: BrokerConfig.CallerLimits set, but the backend (%T) cannot enforce them", backend))
		}
		b.limCreator, _ = s.creator.(limitedCreator)
	}
	return b
}

// Enqueue accepts a task for the named flow and returns its id. The task
// is PENDING from the moment Enqueue returns.
//
// The flow must be in the Broker's registry (BrokerConfig.Registry) and
// the inputs must pass its validation (flow.Validate), or Enqueue fails at
// once, recording nothing, with the error of registry.Lookup (wrapping
// registry.ErrUnknownFlow) or of the validation (flow.ErrInvalidInputs,
// often a *flow.InputError). The task gets the inputs as the validation
// returns them: nil inputs become {}. See EnqueueTyped for a flow built
// with flow.Typed.
//
// With BrokerConfig.CallerLimits set, an Enqueue whose
// EnqueueOptions.Caller is over a limit fails with a *CallerLimitError
// (ErrCallerLimit) and enqueues nothing. On Redis the check goes in the
// round trip that enqueues; with an idempotency key, or on a Cluster
// client, it takes one round trip more. A refused start is not counted;
// an accepted one is, even if the enqueue then fails.
//
// A negative opts.MaxAttempts or opts.Timeout, or an opts.RunAt out of
// range, fails at once, recording nothing, with an error wrapping
// ErrInvalidOptions that names the field.
func (b *Broker) Enqueue(ctx context.Context, flowName string, inputs json.RawMessage, opts EnqueueOptions) (string, error) {
	if err := opts.check(); err != nil {
		return "", err
	}
	entry, inputs, err := b.check(flowName, inputs)
	if err != nil {
		return "", err
	}
	policy := entry.Policy
	t := &Task{
		ID:          NewID(),
		Flow:        flowName,
		Inputs:      inputs,
		MaxAttempts: opts.MaxAttempts,
		Timeout:     opts.Timeout,
		EnqueuedAt:  time.Now().UTC(),
		RunAt:       opts.RunAt,
		Owner:       opts.Owner,
		Limit:       LimitOf(policy),
	}
	if t.MaxAttempts == 0 {
		t.MaxAttempts = cmp.Or(policy.MaxAttempts, b.cfg.MaxAttempts)
	}
	if t.Timeout == 0 {
		t.Timeout = cmp.Or(policy.Timeout, b.cfg.Timeout)
	}
	if opts.IdempotencyKey != "" {
		t.ID = IdempotentID(opts.Owner, opts.IdempotencyKey)
	}
	ctx, span := b.tel.startSpan(ctx, spanEnqueue, t, trace.SpanContext{})
	var repeat bool
	switch limited := b.limited(opts); {
	case limited && opts.IdempotencyKey == "" && b.limCreator != nil:
		err = b.addLimited(ctx, t, opts.Caller)
	case limited:
		if err = b.admit(ctx, t, opts); err == nil {
			repeat, err = b.addKeyed(ctx, t, opts.IdempotencyKey)
		}
	default:
		repeat, err = b.addKeyed(ctx, t, opts.IdempotencyKey)
	}
	b.tel.endSpan(ctx, span, t, err, repeat)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}

// addKeyed is add for a task without an idempotency key, addOnce for
// one with. It reports whether the key's task had been enqueued before
// (repeat): then nothing was.
func (b *Broker) addKeyed(ctx context.Context, t *Task, key string) (repeat bool, err error) {
	if key == "" {
		return false, b.add(ctx, t)
	}
	return b.addOnce(ctx, t)
}

// add records the new task t, whose id NewID drew, as PENDING and
// enqueues it, in one step if the backend offers it: one that takes the
// id as free unchecked, when it can (newCreator).
func (b *Broker) add(ctx context.Context, t *Task) error {
	if b.fresh != nil {
		if err := b.fresh.CreateAndEnqueueNew(ctx, t); err != nil {
			return fmt.Errorf("queue: enqueue task: %w", err)
		}
		return nil
	}
	if b.creator != nil {
		if err := b.creator.CreateAndEnqueue(ctx, t); err != nil {
			return fmt.Errorf("queue: enqueue task: %w", err)
		}
		return nil
	}
	if err := b.create(ctx, t); err != nil {
		return err
	}
	if err := b.backend.Enqueue(ctx, t); err != nil {
		return fmt.Errorf("queue: enqueue task: %w", err)
	}
	return nil
}

// create records the new task t as PENDING in the store, before it is
// queued: with the status line of a task that waits for its flow's
// limits when it has some (see Limit), which the worker's start replaces.
func (b *Broker) create(ctx context.Context, t *Task) error {
	if err := b.store.Create(ctx, t.ID); err != nil {
		return fmt.Errorf("queue: record task: %w", err)
	}
	if !t.Limit.On() {
		return nil
	}
	if _, err := b.store.Append(ctx, t.ID, progress.Event{Type: progress.EventState, State: progress.StatePending, Status: t.Limit.Waiting(t.Flow)}); err != nil {
		return fmt.Errorf("queue: record task: %w", err)
	}
	return nil
}

// addLimited is add in one step with the caller limits checked in it:
// for a task whose id NewID drew, as add.
func (b *Broker) addLimited(ctx context.Context, t *Task, caller string) error {
	err := b.limCreator.CreateAndEnqueueLimited(ctx, t, caller, b.cfg.CallerLimits)
	switch {
	case errors.Is(err, ErrCallerLimit):
		return err
	case err != nil:
		return fmt.Errorf("queue: enqueue task: %w", err)
	}
	return nil
}

// Dead lists the dead-letter set: the tasks that failed for good within
// the backend's retention period, most recently buried first, up to limit
// entries (all of them when limit < 1).
func (b *Broker) Dead(ctx context.Context, limit int) ([]DeadTask, error) {
	return b.backend.Dead(ctx, limit)
}

// Requeue runs a dead task again and returns the id of the new task that
// does so. The new task has the dead one's flow, inputs, attempts, time
// limit and owner, starts with attempt 1, and names the dead task in
// Task.RequeuedFrom and in the first step of its log ("re-queued from task
// <id>"); the dead task keeps its FAILURE and leaves the dead-letter set.
// Requeue returns ErrNotFound for an unknown task and ErrNotDead for a task
// that is not in the dead-letter set (it did not fail, or was re-queued
// already: of two concurrent calls for one task, one fails so).
//
// A new id keeps "one terminal state per task" true: the progress store
// refuses every event after FAILURE, so the dead task's history stays as
// it ended, and watchers of the new task see it from PENDING.
func (b *Broker) Requeue(ctx context.Context, id string) (string, error) {
	return b.RequeueWith(ctx, id, RequeueOptions{})
}

// RequeueOptions are the options of Broker.RequeueWith. The zero value
// re-queues as Broker.Requeue does.
type RequeueOptions struct {
	// Resume has the new task resume the dead one: each attempt of its
	// flow replays the steps the dead task completed (flow.Step, and the
	// model and tool calls of flow/lcflow), logging "<step>: replayed from
	// task <dead id>", and runs the rest, instead of running every step
	// again. It reads the dead task's checkpoints (one more read of the
	// checkpoint store per attempt, on Redis a round trip) and records
	// each step it replays as its own, so that they expire with it. A
	// dead task whose checkpoints are gone (its retention has passed)
	// resumes nothing, and the new task's log says so.
	Resume bool
}

// RequeueWith runs a dead task again as Requeue does, with the options o.
func (b *Broker) RequeueWith(ctx context.Context, id string, o RequeueOptions) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidID)
	}
	dead, err := b.backend.Get(ctx, id)
	if err != nil {
		return "", err
	}
	t := &Task{
		ID:           NewID(),
		Flow:         dead.Flow,
		Inputs:       dead.Inputs,
		MaxAttempts:  dead.MaxAttempts,
		Timeout:      dead.Timeout,
		EnqueuedAt:   time.Now().UTC(),
		RequeuedFrom: id,
		Resume:       o.Resume,
		Owner:        dead.Owner,
	}
	if entry, err := b.cfg.Registry.Lookup(dead.Flow); err == nil {
		t.Limit = LimitOf(entry.Policy)
	}
	// The new task starts a trace of its own, linked to the dead one's.
	ctx, span := b.tel.startSpan(ctx, spanRequeue, t, telemetry.SpanContext(dead.TraceParent, dead.TraceState))
	err = b.requeue(ctx, id, t)
	b.tel.endSpan(ctx, span, t, err, false)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}

// requeue records the new task t as PENDING and puts it in the place of
// the dead task id.
func (b *Broker) requeue(ctx context.Context, id string, t *Task) error {
	if err := b.create(ctx, t); err != nil {
		return err
	}
	if err := b.backend.Requeue(ctx, id, t); err != nil {
		// The new progress record is known to no one and expires with
		// the store's retention.
		return fmt.Errorf("queue: re-queue task %s: %w", id, err)
	}
	return nil
}

// Cancel asks a pending or running task to stop. A pending task ends
// FAILURE at once; a running one has its context cancelled on whichever
// worker runs it, and ends FAILURE when its flow returns (or when the
// worker's abandon delay passes); a flow that had already returned when
// the cancellation reached its worker keeps its outcome, so the task may
// still end SUCCESS. It returns ErrNotFound for an unknown task and
// ErrFinished for one that has already ended.
func (b *Broker) Cancel(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidID)
	}
	snap, _, err := b.store.Snapshot(ctx, id)
	switch {
	case errors.Is(err, progress.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return err
	case snap.State.Terminal():
		return fmt.Errorf("%w: %s is %s", ErrFinished, id, snap.State)
	}
	if err := b.backend.Cancel(ctx, id); err != nil {
		return err
	}
	if snap.State == progress.StatePending {
		// Nobody runs it yet: end it now. If a worker started it in the
		// meantime, the worker's cancellation ends it instead, and this
		// append fails with ErrFinished or lands first; either way there
		// is exactly one terminal state.
		end := progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: StatusCancelled}
		_, err := b.appendEnd(ctx, id, end)
		if err != nil && !errors.Is(err, progress.ErrFinished) {
			return err
		}
		if err == nil {
			if t, gerr := b.backend.Get(ctx, id); gerr == nil {
				b.tel.ended.Add([2]string{t.Flow, string(progress.StateFailure)}, 1)
			}
		}
	}
	return nil
}

// appendEnd appends the terminal event end to task id: with the task's
// record when the backend is the store and takes it (taskAppender), which
// costs a read of the record and lets the backend index the task by flow.
func (b *Broker) appendEnd(ctx context.Context, id string, end progress.Event) (string, error) {
	if b.app != nil {
		if t, err := b.backend.Get(ctx, id); err == nil {
			return b.app.AppendTask(ctx, t, end)
		}
	}
	return b.store.Append(ctx, id, end)
}

// StatusCancelled is the status line of a task that ended because it was
// cancelled.
const StatusCancelled = "Cancelled"

// TaskInfo is a task's queue record together with its progress snapshot.
type TaskInfo struct {
	Task     *Task
	Snapshot progress.Snapshot
	// LastEventID is the id of the last event folded into Snapshot.
	LastEventID string
}

// Task returns the task with its current snapshot, or ErrNotFound.
func (b *Broker) Task(ctx context.Context, id string) (*TaskInfo, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidID)
	}
	snap, last, err := b.store.Snapshot(ctx, id)
	return b.info(ctx, id, snap, last, err)
}

// Record returns the queue's record of task id (its flow, owner and
// attempts): TaskInfo.Task, read without the snapshot, so that its cost
// does not grow with the task's steps. It gives ErrNotFound for an
// unknown task, and for one whose record the backend no longer holds
// (Task may still find that one's snapshot).
func (b *Broker) Record(ctx context.Context, id string) (*Task, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidID)
	}
	return b.backend.Get(ctx, id)
}

// info returns task id's TaskInfo from its snapshot, read with error err,
// and the queue's record: an unknown snapshot is ErrNotFound, a record the
// backend no longer holds a nil TaskInfo.Task.
func (b *Broker) info(ctx context.Context, id string, snap progress.Snapshot, last string, err error) (*TaskInfo, error) {
	if errors.Is(err, progress.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	t, err := b.backend.Get(ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return &TaskInfo{Task: t, Snapshot: snap, LastEventID: last}, nil
}
