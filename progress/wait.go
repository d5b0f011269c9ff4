package progress

import (
	"context"
	"errors"
	"fmt"
)

// WaitFinished returns task taskID's snapshot, and the id of the last
// event folded into it, once the task has reached SUCCESS or FAILURE: at
// once if it has, else when b's live feed (Subscribe) delivers the
// terminal event. It reads the snapshot once and then follows the feed
// from there; it never polls. A feed that ends before the task, the task
// still there (on Redis, after a failover that lost events it had
// delivered, or those up to the snapshot it read), it follows again from
// the snapshot as read again. It
// returns an error wrapping ErrNotFound for an unknown task, or one whose
// retention passes while it waits, and ctx's error when ctx ends first.
// Everything its subscription holds is freed when it returns.
func WaitFinished(ctx context.Context, b Backend, taskID string) (Snapshot, string, error) {
	snap, last, err := b.Snapshot(ctx, taskID)
	for err == nil && !snap.State.Terminal() {
		var ended bool
		snap, last, ended, err = follow(ctx, b, taskID, snap, last)
		if err != nil || ended {
			return snap, last, err
		}
		// The feed ended before the task: read where the task is.
		snap, last, err = b.Snapshot(ctx, taskID)
		if errors.Is(err, ErrNotFound) {
			return Snapshot{}, "", fmt.Errorf("%w: %q: gone before it finished", ErrNotFound, taskID)
		}
	}
	return snap, last, err
}

// follow folds the events of taskID after last into snap until the
// terminal one (ended), the feed's end, or ctx's.
func follow(ctx context.Context, b Backend, taskID string, snap Snapshot, last string) (Snapshot, string, bool, error) {
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := b.Subscribe(subCtx, taskID, last)
	if err != nil {
		return Snapshot{}, "", false, err
	}
	for e := range events {
		snap.Apply(e)
		if e.ID != "" {
			last = e.ID
		}
		if e.Terminal() {
			return snap, last, true, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return Snapshot{}, "", false, err
	}
	return snap, last, false, nil
}
