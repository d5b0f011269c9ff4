package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/flowsrun/flows/progress"
)

// ErrNoSubscriber: Wait was called on a Broker whose progress store
// cannot deliver live events (it is not a progress.Subscriber). Build the
// Broker with the store the workers write to, which can (both of this
// module's can).
var ErrNoSubscriber = errors.New("queue: the progress store cannot deliver live events (progress.Subscriber), which Wait needs")

// Wait returns the task with its terminal snapshot once it has reached
// SUCCESS or FAILURE: at once for a task that has ended (a cancelled task
// has ended FAILURE), else when the progress store's live feed delivers
// its end; it never polls. TaskInfo.Task is the queue's record as it is
// then (nil if the backend no longer holds it). Wait returns ErrNotFound
// for an unknown task, or one whose retention passes while it waits,
// ctx's error when ctx ends first (give it a deadline), and
// ErrNoSubscriber when the Broker's store cannot subscribe. A Wait costs
// a subscription while it lasts; everything it holds is freed when it
// returns.
func (b *Broker) Wait(ctx context.Context, id string) (*TaskInfo, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, ErrInvalidID)
	}
	feed, ok := b.store.(progress.Backend)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrNoSubscriber, b.store)
	}
	snap, last, err := progress.WaitFinished(ctx, feed, id)
	return b.info(ctx, id, snap, last, err)
}
