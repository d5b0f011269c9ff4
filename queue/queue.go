// Package queue runs flows off the request path. It has three roles, as
// small as their names:
//
//   - Broker accepts tasks (Enqueue), cancels them (Cancel), looks them up
//     (Task), waits for them to end (Wait), lists the dead-letter set
//     (Dead) and runs dead tasks again (Requeue).
//   - Worker fetches tasks, runs their flows with a progress reporter, and
//     acknowledges, retries or fails them; it recovers from panics, enforces
//     time limits and shuts down gracefully.
//   - Backend is the storage both run on: NewMemory for a single process
//     (the default), and a Redis implementation for many.
//
// Delivery is at least once: a task whose worker dies while running it is
// leased again after the lease expires, and the flow sees a higher
// Task.Attempt. A task reaches exactly one terminal state, because the
// progress store refuses every event after the first terminal one.
//
// # Backend and store
//
// NewBroker and NewWorker take the Backend and the progress.Store the
// tasks are recorded in. A nil store means that the backend is the store
// too (the Redis backend is): then they take the one-step path, where
// the backend records a new task and queues it in one step, and records
// a task's end and acknowledges it in one step. Any other store is used
// as it is, on the two-step path; if the backend could have taken the
// one-step path, the constructor logs a warning with the cost. The path is
// chosen by that argument, never guessed from the values.
//
// # Hearing from a task
//
// A host learns that a task has ended in three ways. WorkerConfig.OnFinish
// registers finish hooks, called once per task that ends, on the worker
// that ends it, after the end is recorded and before the task is
// acknowledged: at least once (again after a crash), so they must be
// idempotent; an error or a panic of a hook is logged and changes
// nothing, except an error wrapping ErrRetryHooks, which has the task
// come back later, ended, for its hooks to run again:
//
//	worker := queue.NewWorker(backend, nil, queue.WorkerConfig{
//		OnFinish: []queue.FinishHook{func(ctx context.Context, f queue.Finished) error {
//			log.Printf("%s %s: %s", f.Task.Flow, f.Task.ID, f.Snapshot.State)
//			return nil
//		}},
//	})
//
// Broker.Wait blocks until a task ends and returns its final snapshot,
// from the progress store's live feed. And an event stream
// (progress.Subscriber, or the HTTP API) shows every step.
//
// A hook that enqueues work makes it idempotent with
// EnqueueOptions.IdempotencyKey: while the backend retains the task, the
// same key (and owner) with the same flow and inputs gives the same task
// id and enqueues nothing, and with another flow or other inputs fails
// with ErrIdempotencyConflict.
//
// # Dead letters
//
// A task that a worker ends FAILURE for any reason but cancellation (its
// retries are spent, its runs kept killing workers, its flow returned a
// permanent error, panicked, timed out or is not registered) is buried:
// acknowledged, and kept in the backend's dead-letter set for the
// backend's retention period. Broker.Dead lists that set and
// Broker.Requeue runs a dead task again, as a new task with a new id: the
// failed task keeps its one terminal state, and the new one names it in
// Task.RequeuedFrom and in the first step of its log. Broker.RequeueWith
// with RequeueOptions.Resume has the new task resume the dead one: it
// replays the steps the dead task completed (its checkpoints, see
// flow.Step) instead of running them again. Cancelled tasks are never
// buried: someone asked for them to stop.
//
// # Tracing and metrics
//
// The Broker and the Worker use the OpenTelemetry API, with the providers
// of their config (BrokerConfig.TracerProvider and MeterProvider,
// WorkerConfig likewise) or, when those are nil, the global ones, which do
// nothing until a program installs an SDK.
//
// Spans: Enqueue makes flows.enqueue (kind producer) and Requeue
// flows.requeue (a new trace, linked to the dead task's); the task
// carries that span's W3C trace context (Task.TraceParent, TraceState),
// and every lease of it on any worker makes flows.run (kind consumer), a
// child of it, so one trace holds the task from its start to its end,
// each attempt included. The flow runs with the flows.run span in its
// context. Attributes: flows.task.id, flows.flow, flows.task.attempt,
// flows.worker, flows.run.outcome (success, failure, retry) and
// flows.task.state; a failed attempt has an error status, and so has a
// failed Enqueue or Requeue. A status carries the error's text with the
// credentials it may quote masked (the password of a URL, secret query
// parameters, Bearer and Basic values), as the task's status and the
// logs do; a run's is cut to WorkerConfig.MaxReportBytes. An Enqueue
// that repeats an idempotency key whose task was enqueued before makes a
// flows.enqueue span with flows.task.repeat=true: the task's runs are
// children of the first enqueue's span.
//
// Metrics (attributes in brackets):
//
//	flows.tasks.enqueued       counter    tasks accepted by a Broker, a repeated idempotency key's once [flows.flow]
//	flows.tasks.started        counter    runs of flows started [flows.flow]
//	flows.tasks.ended          counter    tasks that reached SUCCESS or FAILURE [flows.flow, flows.task.state]
//	flows.task.run.duration    histogram  seconds per run [flows.flow, flows.run.outcome]
//	flows.task.pickup.latency  histogram  seconds from ready to leased, first attempts [flows.flow]
//	flows.events.published     counter    progress events recorded by workers [flows.event.type]
//	flows.queue.depth          gauge      tasks by flows.queue.state: ready, delayed, running, hooks_waiting (Broker; a DepthReader backend)
//
// The attribute sets are made once per flow and state: without an SDK a
// task costs a few no-op calls, with one a few cached lookups.
//
// flows.queue.depth is read from the backend at each collection. While
// it cannot be read (Redis down), the gauge observes nothing and returns
// no error to the SDK, which would pass one to OpenTelemetry's global
// error handler at every collection and, with a periodic reader, export
// none of that collection's other metrics; the Broker's Logger warns
// once per outage and says when the depth can be read again. Each
// collection meanwhile waits for the backend, up to its operation
// timeout.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// Errors of the queue; check them with errors.Is.
var (
	// ErrNotFound: no task with that id.
	ErrNotFound = errors.New("queue: task not found")
	// ErrFinished: the task has already reached SUCCESS or FAILURE.
	ErrFinished = errors.New("queue: task already finished")
	// ErrLeaseLost: the lease expired and the task was handed to another
	// worker, or the task was acknowledged already.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrUnavailable wraps errors of a backend that cannot be reached
	// (Redis down) or that refused a call without running it (Redis
	// during a failover or held up by a long script); the HTTP layer
	// answers it with 503. Such an error may also wrap progress.ErrNotSent
	// when the call certainly did nothing (the connection could not be
	// made, or the backend refused it unrun), or, for an append
	// with an append key whose outcome is unknown,
	// progress.ErrMaybeSent: a progress.TaskReporter sends both again.
	ErrUnavailable = errors.New("queue: backend unavailable")
	// ErrInvalidID: a task id that no task can have.
	ErrInvalidID = errors.New("queue: invalid task id")
	// ErrNotDead: the task is not in the dead-letter set (it did not fail,
	// was re-queued already, or its retention has passed).
	ErrNotDead = errors.New("queue: task is not in the dead-letter set")
	// ErrCancelled: Extend found the task cancelled (Cancel was asked for
	// it). The lease was extended all the same; the holder should stop the
	// run and end the task.
	ErrCancelled = errors.New("queue: task cancelled")
	// ErrInvalidOptions: a call's options hold a value that can only be
	// a mistake, such as a negative EnqueueOptions.MaxAttempts; the
	// error names the field. Nothing was recorded.
	ErrInvalidOptions = errors.New("queue: invalid options")
)

// Task is a task as the queue stores it.
type Task struct {
	// ID identifies the task everywhere: HTTP, progress, Redis keys.
	ID string `json:"task_id"`
	// Flow is the registered name of the flow to run.
	Flow string `json:"flow"`
	// Inputs are the validated inputs, a JSON object.
	Inputs json.RawMessage `json:"inputs"`
	// Attempt counts the leases of this task so far: 0 while it waits for
	// its first run, 1 during the first run, and so on. Every lease has a
	// number of its own, hand-backs included.
	Attempt int `json:"attempt"`
	// PreviousEnd says why the attempt before this one ended, "" before
	// the second: set by the backend as it leases the task (see
	// AttemptEnd). The worker announces it in the task's log as the
	// attempt starts.
	PreviousEnd AttemptEnd `json:"previous_end,omitempty"`
	// CountedEnd says why the last attempt that counted against
	// MaxAttempts ended (AttemptEnd.Counts), "" before one ended so: set
	// by the backend with PreviousEnd, in the same write, and left alone
	// by the hand-backs and the give-backs for the finish hooks that
	// followed that attempt. A worker that finds the task's attempts
	// spent after a hand-back names it in the task's status. A record
	// written before backends kept it has none.
	CountedEnd AttemptEnd `json:"counted_end,omitempty"`
	// HandBacks counts the attempts of this task that were handed back
	// through no fault of its flow (AttemptEnd.Counts is false): set by
	// the backend's Retry. They spend none of MaxAttempts; a worker bounds
	// them apart (WorkerConfig.MaxHandBacks).
	HandBacks int `json:"hand_backs,omitempty"`
	// HookRetries counts the times the task, once ended, was given back
	// for its finish hooks to run again (EndHooksPending, see
	// ErrRetryHooks): set by the backend's Retry. Each is a lease of its
	// own (Attempt goes up), but neither an attempt nor a hand-back; a
	// worker bounds them apart (WorkerConfig.MaxHookRetries).
	HookRetries int `json:"hook_retries,omitempty"`
	// HooksDue is set on a task read outside a lease (Get, a listing)
	// that was given back for its finish hooks to run again
	// (EndHooksPending) and that no lease has taken since: its
	// HookRetries then counts the lease to come, which Attempt does not
	// yet (see Attempts). Set by the backend as it reads the record, from
	// what it reads for the rest; never on a leased task.
	HooksDue bool `json:"hooks_due,omitempty"`
	// NoRuns counts the leases of the task that did not run its flow,
	// other than those HookRetries counts: a lease that found the task
	// cancelled, ended (by a cancellation while pending, or by a worker
	// that died before acknowledging it), its attempts or hand-backs
	// spent, or its flow unknown, and let it go without running it, or
	// one handed back before it ran (EndHandedBack: leased beyond what
	// the worker asked for, or while its heartbeats had lapsed); see
	// Lease.NoRun. Set by the backend's Ack, Bury and Retry.
	NoRuns int `json:"no_runs,omitempty"`
	// MaxAttempts bounds the runs of the task that count, runs cut short
	// by a worker's death among them, hand-backs not (see Runs).
	MaxAttempts int `json:"max_attempts"`
	// Timeout is the task's time limit for one run.
	Timeout time.Duration `json:"timeout"`
	// EnqueuedAt is when the task was accepted.
	EnqueuedAt time.Time `json:"enqueued_at"`
	// RunAt is when the task becomes ready; zero means at once.
	RunAt time.Time `json:"run_at,omitzero"`
	// Cancelled is set once Cancel has been asked for the task.
	Cancelled bool `json:"cancelled,omitempty"`
	// RequeuedFrom is the id of the dead task this task was re-queued
	// from (Broker.Requeue), "" for a task started afresh.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	// Resume is set on a task re-queued to resume its dead task
	// (RequeueOptions.Resume): its flow replays the steps task
	// RequeuedFrom completed (see flow.Step) and runs the rest.
	Resume bool `json:"resume,omitempty"`
	// TraceParent and TraceState are the W3C Trace Context (the
	// traceparent and tracestate headers) of the span that enqueued the
	// task, "" when it was enqueued outside a trace. Each run of the task
	// is traced as a child of that span, so that one trace follows the
	// task from start-task to its end. Backends store them as they are.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	// Owner names the caller that started the task (EnqueueOptions.Owner;
	// over HTTP, the ID of the ssehttp.Principal), "" for none. It is
	// stored with the task and kept by Requeue; the HTTP API shows a task
	// only to its owner and to operators. InternalOwner owns the tasks
	// that are no caller's.
	Owner string `json:"owner,omitempty"`
	// Limit is what the flow's policy limits of its starts (see Limit):
	// set by the Broker as it enqueues the task and by the Worker as it
	// leases it, each from its registry. Backends do not store it.
	Limit Limit `json:"-"`
}

// InternalOwner is the owner (Task.Owner) of the tasks a library enqueues
// for its own ends, not for a caller: the notification tasks of package
// notify. No caller of the HTTP API can be it (ssehttp refuses a
// Principal with this ID), so that only operators may read, wait on,
// watch, cancel or re-queue these tasks, whichever caller's task they
// are about.
const InternalOwner = "flows:internal"

// resumeFrom is the dead task whose checkpoints t's runs replay (see
// Task.Resume), "" for none.
func (t *Task) resumeFrom() string {
	if t.Resume {
		return t.RequeuedFrom
	}
	return ""
}

// Attempts is the number of leases of the task that were attempts to run
// its flow: Attempt less the leases that only ran its finish hooks again
// (HookRetries, see ErrRetryHooks), one of which has not happened yet
// while HooksDue is set, and less the leases that let the task go
// without running its flow (NoRuns: a task cancelled while pending, or
// buried once its attempts were spent, say), as the history of package
// pghistory counts them. A lease lost after the task ended (to a
// worker's death, say) is not left out, nor are hand-backs (see Runs for
// those). It is the attempt every view of a task shows:
// TaskSummary.Attempt, the "attempt" of GET /tasks/ and GET /tasks/{id}/,
// the ops page, flows ls and flows show. DeadTask.Attempts is this
// number as the task was buried.
func (t *Task) Attempts() int {
	n := t.Attempt - t.HookRetries - t.NoRuns
	if t.HooksDue {
		n++
	}
	return n
}

// Runs is the number of runs the task gets: MaxAttempts, plus one for
// each hand-back that did not count (HandBacks); 0 when MaxAttempts is.
func (t *Task) Runs() int {
	if t.MaxAttempts <= 0 {
		return 0
	}
	return t.MaxAttempts + t.HandBacks
}

// DeadTask is an entry of the dead-letter set: a task that failed for
// good (see the package documentation for which failures bury a task).
type DeadTask struct {
	// ID is the id of the failed task.
	ID string `json:"task_id"`
	// Flow is the name of its flow.
	Flow string `json:"flow"`
	// Reason is why it failed: the status line of its FAILURE.
	Reason string `json:"reason"`
	// Attempts is the number of runs it was given: Task.Attempts when it
	// was buried, that is Task.Attempt less the leases that only ran its
	// finish hooks again (Task.HookRetries, see ErrRetryHooks) and those
	// that did not run its flow (Task.NoRuns), the lease that buried it
	// among them when it did not (Lease.NoRun: a task whose attempts
	// were spent, say). A lease lost after the task ended (to a worker's
	// death, say) is not left out.
	Attempts int `json:"attempts"`
	// BuriedAt is when it was buried.
	BuriedAt time.Time `json:"buried_at"`
}

// Lease is a worker's claim on a task, valid until Deadline unless
// extended. Token is the backend's own handle on the claim. Fetch sets
// Deadline to when it leased the task plus the lease's duration: a
// worker takes the task's pickup latency from it
// (flows.task.pickup.latency), and reads no clock for it.
type Lease struct {
	Task     *Task
	Token    string
	Deadline time.Time
	// NoRun is set by the worker on the lease it passes to Ack, Bury or
	// Retry (for EndHooksPending or EndHandedBack) when it let the task
	// go without running its flow under this lease, nor running its
	// finish hooks again for HookRetries' sake: it found the task
	// cancelled or ended, its attempts or hand-backs spent, or its flow
	// unknown, or it handed the task back unrun (a lease beyond what it
	// asked for, or taken while its heartbeats had lapsed). The backend
	// then counts the lease in Task.NoRuns, once, as it acknowledges,
	// buries or gives back the task; never a lease that another has
	// taken over since (a backend that ignores the flag counts such a
	// lease as a run, as before).
	NoRun bool
}

// Backend is the storage a Broker and Workers share. Implementations must
// be safe for concurrent use; package queuetest has the conformance suite
// every implementation passes.
type Backend interface {
	// Enqueue stores t and makes it ready at t.RunAt (at once when zero).
	// It returns an error wrapping ErrUnavailable when the storage cannot
	// be reached.
	Enqueue(ctx context.Context, t *Task) error

	// Fetch blocks until at least one task is ready or ctx ends, then
	// leases up to max ready tasks to the named worker until now+lease,
	// incrementing each task's Attempt. Tasks whose lease expired are ready
	// again. Each task's PreviousEnd says why its previous attempt ended:
	// EndLeaseExpired for a task taken over from an expired lease, what
	// Retry was told for a task given back, "" for a first attempt. When
	// ctx ends first it returns ctx.Err().
	Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*Lease, error)

	// Extend moves l's deadline to now+lease. It returns ErrLeaseLost when
	// the task is no longer held under l. When the task is still held but
	// has been cancelled, it extends the lease and returns ErrCancelled:
	// a worker learns of a cancellation from its heartbeat even when the
	// Cancellations feed missed it.
	Extend(ctx context.Context, l *Lease, lease time.Duration) error

	// Ack removes the task from the queue for good: it has reached a
	// terminal state. It returns ErrLeaseLost when l is no longer valid.
	Ack(ctx context.Context, l *Lease) error

	// Bury does what Ack does and keeps the task in the dead-letter set,
	// with reason, the time and its attempts (see DeadTask.Attempts), for
	// the backend's retention period. It
	// returns ErrLeaseLost when l is no longer valid; then nothing is
	// buried. Ack and Bury count l in Task.NoRuns when l.NoRun is set.
	Bury(ctx context.Context, l *Lease, reason string) error

	// Dead lists the dead-letter set, most recently buried first, up to
	// limit entries (all of them when limit < 1).
	Dead(ctx context.Context, limit int) ([]DeadTask, error)

	// Requeue takes the task deadID out of the dead-letter set and
	// enqueues t (a new task, as Enqueue does) in its place, as one step:
	// when two calls race for one dead task, one fails with ErrNotDead and
	// enqueues nothing. It returns an error wrapping ErrNotDead when
	// deadID is not in the set.
	Requeue(ctx context.Context, deadID string, t *Task) error

	// Retry gives the task back to be leased again at or after at; a
	// cancelled task given back for a retry of its flow (why.Counts()) is
	// ready at once (see Cancel). Any other waits for at whether or not
	// it was cancelled: a task given back for its finish hooks
	// (EndHooksPending) has ended, and a hand-back (EndStoreDown, say)
	// waits for the pause its worker asked for, or a cancelled task would
	// be leased and handed back again at once, over and over, while the
	// progress store is away. A cancelled task never waits for a slot
	// of its flow's limits. why says how the
	// attempt ended: the next lease of the task carries it in
	// Task.PreviousEnd, and when it does not count (why.Counts() is
	// false) the task's HandBacks one higher, or for EndHooksPending its
	// HookRetries; and when l.NoRun is set, its NoRuns. It returns
	// ErrLeaseLost when l is no longer valid, and then counts nothing.
	Retry(ctx context.Context, l *Lease, at time.Time, why AttemptEnd) error

	// Get returns the stored task, or ErrNotFound. A task stays readable
	// after Ack for the backend's retention period.
	Get(ctx context.Context, id string) (*Task, error)

	// Cancel marks the task cancelled and tells every worker listening on
	// Cancellations. A task waiting for its RunAt or for a retry becomes
	// ready at once, so that a worker ends it without waiting out the
	// delay; one given back for its finish hooks (EndHooksPending) has
	// ended, and waits on. It returns ErrNotFound for an unknown task.
	Cancel(ctx context.Context, id string) error

	// Cancellations delivers the ids of tasks cancelled from now on, until
	// ctx ends; then the channel is closed.
	Cancellations(ctx context.Context) (<-chan string, error)
}

// Retirer is implemented by a Backend that keeps state for each worker
// name (the Redis backend keeps a consumer of its stream's group). A Worker
// calls Retire with its name when Run returns, after its last task is
// settled; a backend keeps whatever the worker may still hold (a task it
// could not hand back is taken over once its lease passes).
type Retirer interface {
	// Retire forgets what the backend keeps about the named worker.
	Retire(ctx context.Context, worker string) error
}

// NewID returns a new random task id: 32 lowercase hex digits.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id can be a task id: 1-64 letters, digits, _ or
// -. Ids from outside (URLs) are checked with it before they reach storage.
func ValidID(id string) bool {
	// A loop rather than a regular expression: every backend call checks
	// an id, several times per task.
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Depth counts the tasks of a queue by where they are.
type Depth struct {
	// Ready is the tasks waiting for a worker. A task cancelled while it
	// waits is not counted by the Memory backend, and is by the Redis
	// backend until a worker takes it and drops it (see Stats.Ready).
	Ready int64
	// Delayed is the tasks waiting for a later time to run their flow:
	// their RunAt, or the backoff before a retry.
	Delayed int64
	// Running is the tasks leased to a worker.
	Running int64
	// HooksWaiting is the tasks that have ended (SUCCESS or FAILURE) and
	// wait for a later time to run their finish hooks again (see
	// ErrRetryHooks): no run of their flow waits, so they are not
	// Delayed. Once due, they are Ready, then Running, for the lease that
	// runs the hooks.
	HooksWaiting int64
}

// DepthReader is implemented by a Backend that counts its tasks by where
// they are without scanning them (both backends of this module do). A
// Broker reports it as the flows.queue.depth gauge of its MeterProvider.
type DepthReader interface {
	// Depth returns the counts of the backend's queue.
	Depth(ctx context.Context) (Depth, error)
}
