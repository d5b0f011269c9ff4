package progress

import (
	"context"
	"fmt"
)

// WaitFinished returns task taskID's snapshot, and the id of the last
// event folded into it, once the task has reached SUCCESS or FAILURE: at
// once if it has, else when b's live feed (Subscribe) delivers the
// terminal event. It reads the snapshot once and then follows the feed
// from there; it never polls. It returns an error wrapping ErrNotFound for
// an unknown task, or one whose retention passes while it waits, and
// ctx's error when ctx ends first. Everything its subscription holds is
// freed when it returns.
func WaitFinished(ctx context.Context, b Backend, taskID string) (Snapshot, string, error) {
	snap, last, err := b.Snapshot(ctx, taskID)
	if err != nil || snap.State.Terminal() {
		return snap, last, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := b.Subscribe(subCtx, taskID, last)
	if err != nil {
		return Snapshot{}, "", err
	}
	for e := range events {
		snap.Apply(e)
		if e.ID != "" {
			last = e.ID
		}
		if e.Terminal() {
			return snap, last, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return Snapshot{}, "", err
	}
	return Snapshot{}, "", fmt.Errorf("%w: %q: gone before it finished", ErrNotFound, taskID)
}
