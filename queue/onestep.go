package queue

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/flowsrun/flows/progress"
)

// The one-step path. A Backend that is also the progress store (the Redis
// backend keeps a task's queue record and its progress in one hash) can do
// in one step what otherwise takes two: record a new task and queue it,
// record a task's last events and acknowledge its lease, and read a task's
// progress state as it leases it. It offers these through the methods
// below, which the Broker and the Worker use when, and only when, they
// were told that the backend is the store: a nil store (or the backend
// itself passed as the store) says so. A different store, even one that
// wraps the backend, takes the two-step path, and the constructor logs a
// warning once that names the cost.
//
// These interfaces are unexported on purpose: they are a contract between
// this package and its backends, met by method set, not something a user
// of the package calls.

// taskCreator records a new task's progress and enqueues it in one step.
type taskCreator interface {
	// CreateAndEnqueue does what progress.Store.Create(ctx, t.ID) followed
	// by Backend.Enqueue(ctx, t) does. t.ID must be new (NewID): an
	// implementation may queue t before it finds the id taken, so it must
	// not be used to probe whether an id is free.
	CreateAndEnqueue(ctx context.Context, t *Task) error
}

// newCreator is taskCreator for a task whose id NewID has just drawn for
// it: a Broker's own ids, which no other task can have.
type newCreator interface {
	// CreateAndEnqueueNew does what CreateAndEnqueue does, for a task
	// whose id NewID drew for this call: the implementation may take
	// the id as free without checking it (on Redis, a command less per
	// task). Given an id that is taken, it may overwrite that task.
	CreateAndEnqueueNew(ctx context.Context, t *Task) error
}

// onceCreator records a new task's progress and enqueues it in one
// atomic step, refusing an id already taken: the one-step path of a task
// with an idempotency key, whose id is derived from the key (see
// IdempotentID).
type onceCreator interface {
	// CreateAndEnqueueOnce does what CreateAndEnqueue does, unless a task
	// with t's id has a progress record: then it records and queues
	// nothing and returns an error wrapping progress.ErrExists. It
	// returns an error wrapping errors.ErrUnsupported, having done
	// nothing, when it cannot take that as one step for t: the caller
	// then takes the two steps (progress.Store.Create, then
	// Backend.Enqueue), which no crash between can leave with the id
	// claimed and the task never queued.
	CreateAndEnqueueOnce(ctx context.Context, t *Task) error
}

// finisher records a task's last events and acknowledges its lease in one
// step.
type finisher interface {
	// AppendAndAck appends events to l's task as progress.Store.Append
	// does, and returns what Append would. If the events were recorded,
	// or the task had already ended or is unknown (progress.ErrFinished,
	// progress.ErrNotFound), it also acknowledges l as Backend.Ack does,
	// in the same step, and acked reports whether that succeeded (false
	// for a lease no longer held). On any other error nothing is
	// acknowledged. A call made again with the append key of one whose
	// outcome was unknown (progress.ErrMaybeSent), which had recorded the
	// events, reports acked if that call acknowledged l.
	AppendAndAck(ctx context.Context, l *Lease, events ...progress.Event) (lastID string, acked bool, err error)
}

// stateFetcher leases tasks as Backend.Fetch does and reads each one's
// progress state with its lease.
type stateFetcher interface {
	// FetchWithState is Backend.Fetch that also returns, for each lease,
	// the task's progress state as it was read with the lease ("" when
	// the task has no progress record). A Worker that finds PENDING or
	// PROGRESS there does not wait for the start of the task to be
	// recorded before running its flow: the start goes with the flow's
	// first events. A terminal state means that the task has ended: the
	// Worker does not run it.
	FetchWithState(ctx context.Context, worker string, max int, lease time.Duration) ([]*Lease, []progress.State, error)
}

// taskAppender appends events to a task whose record the caller holds.
type taskAppender interface {
	// AppendTask does what progress.Store.Append(ctx, t.ID, events...)
	// does; knowing the task's record lets the backend keep its indexes
	// of tasks by flow (see TaskLister).
	AppendTask(ctx context.Context, t *Task, events ...progress.Event) (lastID string, err error)
}

// startChecker tells whether the start that recorded a task has queued
// it: a backend whose starts may record a task in one step and queue it
// in another (see Broker.enqueuedBefore) offers it.
type startChecker interface {
	// StartDone reports whether the start that recorded task id, whose
	// queue record exists, is done: it has queued the task, or the task
	// is no longer to be queued by it. It is false while such a start is
	// under way, and after one was cut between the record and the queue
	// entry, until the backend takes the record back or ends the task.
	StartDone(ctx context.Context, id string) (bool, error)
}

// oneStep is what a Broker or Worker learnt of its backend and store.
type oneStep struct {
	// self is set when the backend is the store.
	self    bool
	store   progress.Store
	creator taskCreator  // nil unless the backend is the store
	fin     finisher     // nil unless the backend is the store
	fetcher stateFetcher // nil unless the backend is the store
	app     taskAppender // nil unless the backend is the store
}

// resolveStore interprets the store argument of NewBroker and NewWorker
// (who names the caller in messages; worker says which of the two it is):
// nil, or the backend itself, means that the backend is the store, which
// must then implement progress.Store (else resolveStore panics), and turns
// on the one-step path for what the backend offers of it. Any other store
// is used as it is; if the backend offers a one-step method the caller
// would have used, a warning names what the two-step path costs.
func resolveStore(who string, worker bool, backend Backend, store progress.Store, log *slog.Logger) oneStep {
	if backend == nil {
		panic(fmt.Sprintf("queue: %s: nil backend", who))
	}
	self, isStore := backend.(progress.Store)
	if store == nil {
		if !isStore {
			panic(fmt.Sprintf("queue: %s: nil store, and the backend (%T) is not a progress.Store: "+
				"pass the progress store the tasks are recorded in", who, backend))
		}
		store = self
	}
	s := oneStep{store: store}
	s.creator, _ = backend.(taskCreator)
	s.fin, _ = backend.(finisher)
	s.fetcher, _ = backend.(stateFetcher)
	if worker {
		s.creator = nil
	} else {
		s.fin, s.fetcher = nil, nil
	}
	if isStore && sameValue(self, store) {
		s.self = true
		s.app, _ = backend.(taskAppender)
		return s
	}
	var slower []string
	if s.creator != nil {
		slower = append(slower, "Enqueue")
	}
	if s.fetcher != nil {
		slower = append(slower, "the start of a task")
	}
	if s.fin != nil {
		slower = append(slower, "the end of a task")
	}
	if len(slower) > 0 {
		log.Warn("flows: the progress store is not the backend, so the one-step path is off: "+
			"each of these costs one more round trip to the backend per task. "+
			"Pass a nil store to record progress in the backend itself; "+
			"to observe tasks, register finish hooks (WorkerConfig.OnFinish) instead of wrapping the store",
			"caller", who, "slower", slower,
			"backend", fmt.Sprintf("%T", backend), "store", fmt.Sprintf("%T", store))
	}
	return oneStep{store: store}
}

// sameValue reports whether a and b are the same value: the backend passed
// as the store too. Values of a type that cannot be compared are never the
// same (comparing them would panic).
func sameValue(a, b progress.Store) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}
