package progress

import (
	"context"
	"errors"
)

// Errors returned by Store and Subscriber implementations. Check them with
// errors.Is; implementations wrap them with context.
var (
	// ErrNotFound: no task with that id (never created, or its retention
	// has passed).
	ErrNotFound = errors.New("progress: task not found")
	// ErrExists: Create was called for an id that is already stored.
	ErrExists = errors.New("progress: task already exists")
	// ErrFinished: the task has already reached SUCCESS or FAILURE, so the
	// event was not recorded.
	ErrFinished = errors.New("progress: task already finished")
	// ErrBadEventID: an event id (from Last-Event-ID, say) is not of the
	// form the store issues.
	ErrBadEventID = errors.New("progress: malformed event id")
	// ErrInvalidCheckpoint: a checkpoint that cannot be recorded (see
	// Checkpoint.Validate).
	ErrInvalidCheckpoint = errors.New("progress: invalid checkpoint")
	// ErrNotSent: the store could not reach its storage (the connection
	// could not be made), or its storage refused the call before doing
	// anything (a read-only replica that a client still reaches during a
	// failover), so the call certainly changed nothing: it may be made
	// again. A store wraps it only when
	// that is certain; an error whose outcome is unknown (a timeout after
	// the call was sent, a connection cut before the reply) must not
	// wrap it (see ErrMaybeSent). TaskReporter retries the reports that
	// fail with it.
	ErrNotSent = errors.New("progress: not sent (storage not reachable)")
	// ErrMaybeSent: the outcome of an Append that carried an append key
	// (see WithAppendKey) is unknown (a timeout once it was sent, a
	// connection cut before the reply): it may have been recorded or
	// not, and may be made again with the same key, which the store
	// records only once. A store wraps it only for keyed Appends, and only
	// if it honours append keys: that is how a store says it does.
	// TaskReporter retries the reports that fail with it, as those that
	// fail with ErrNotSent.
	ErrMaybeSent = errors.New("progress: outcome unknown (may be sent again with the same append key)")
)

// Store keeps the event log and current snapshot of each task.
//
// Implementations must be safe for concurrent use. The in-memory
// implementation is MemoryStore; the Redis one lives in package queue's
// Redis backend so that both share one key schema.
type Store interface {
	// Create records a new task in state PENDING with no events. It returns
	// ErrExists if the id is taken.
	Create(ctx context.Context, taskID string) error

	// Append validates the events, assigns each the next id of the task and
	// appends them, updating the snapshot in the same atomic step. It
	// returns the id of the last event appended. Once a terminal event has
	// been appended, every later Append fails with ErrFinished and records
	// nothing, so a task reaches exactly one terminal state. Within one call,
	// events after a terminal one are refused the same way (the whole call
	// fails). Unknown tasks give ErrNotFound.
	//
	// A store may honour append keys, making keyed calls idempotent: when
	// ctx carries one (see WithAppendKey), it records the key with the
	// events, in the same atomic step, and a call whose key is that of
	// the task's last keyed call recorded records nothing and returns the
	// id of the task's last event (that call's, unless events were
	// appended since without a key). The checks above come first: such a
	// call to a task that has ended since fails with ErrFinished, unless
	// the call ends the task (its last event is terminal) and its key is
	// the task's last: then it is the call that ended the task, made
	// again, and it records nothing and returns the id of the task's last
	// event, as it does before the end. A store
	// that honours keys wraps ErrMaybeSent in the error of a keyed call
	// whose outcome is unknown, so that its caller may make it again; one
	// that does not ignores keys and never wraps ErrMaybeSent.
	Append(ctx context.Context, taskID string, events ...Event) (lastID string, err error)

	// Snapshot returns the task's current snapshot and the id of the last
	// event folded into it ("" when there is none yet).
	Snapshot(ctx context.Context, taskID string) (snap Snapshot, lastID string, err error)

	// Head returns the task's state and the id of its last event ("" when
	// there is none yet), as Snapshot would, without reading the rest of
	// the snapshot or any event: its cost does not grow with the task's
	// steps or events. The event stream of package ssehttp reads it to
	// answer a client that has seen the task's end already. Unknown tasks
	// give ErrNotFound.
	Head(ctx context.Context, taskID string) (state State, lastID string, err error)

	// Events returns the task's events with ids after afterID, in order;
	// afterID "" means from the first event, and so does, on a store
	// whose ids tell which copy of its data issued them (see Subscribe),
	// an id of events the store no longer holds. A malformed afterID
	// gives ErrBadEventID.
	Events(ctx context.Context, taskID, afterID string) ([]Event, error)
}

// Subscriber delivers a task's events as they are appended.
type Subscriber interface {
	// Subscribe returns a channel that yields every event of the task with
	// an id after afterID ("" for all), in order, each exactly once: first
	// the stored backlog, then live events. The channel is closed after the
	// terminal event has been delivered, when ctx ends, or when the task
	// disappears; a subscription after the terminal event's id is closed at
	// once, and one after an id the task has not reached yet waits for it.
	// A store whose ids tell which copy of its data issued them (Redis,
	// whose failover may lose the last events of a task, and give their
	// positions to others) closes the channel before the terminal event
	// when it finds that the events up to afterID, or those it delivered,
	// are no longer the task's: at once, without an event, after an id of
	// events it no longer holds. The subscriber has folded those events
	// into what it holds; it reads the task again (Snapshot, or Events
	// from the first) and subscribes after what it read.
	// Cancelling ctx frees everything the subscription holds.
	// An unknown task gives ErrNotFound and a malformed afterID
	// ErrBadEventID, before any channel is returned.
	Subscribe(ctx context.Context, taskID, afterID string) (<-chan Event, error)
}

// Backend is a Store that can also deliver live events: what the queue's
// workers write to and what the SSE handler reads from.
type Backend interface {
	Store
	Subscriber
}
