package queuetest

import (
	"context"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// The one-step methods a backend that is also the progress store may
// offer (see the package documentation). Package queue declares the same
// interfaces, unexported, and uses them when its store is the backend.

// taskCreator records a new task's progress (PENDING, as
// progress.Store.Create does) and enqueues it (as queue.Backend.Enqueue
// does) in one step.
type taskCreator interface {
	CreateAndEnqueue(ctx context.Context, t *queue.Task) error
}

// finisher appends events as progress.Store.Append does and returns what
// Append would. If the events were recorded, or the task had already ended
// or is unknown, it also acknowledges l as queue.Backend.Ack does, in the
// same step, and acked reports whether that succeeded (false for a lease
// no longer held). On any other error nothing is acknowledged.
type finisher interface {
	AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (lastID string, acked bool, err error)
}

// stateFetcher is queue.Backend.Fetch that also returns, for each lease,
// the task's progress state as it was read with the lease ("" when the
// task has no progress record).
type stateFetcher interface {
	FetchWithState(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, []progress.State, error)
}
