package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/flowsrun/flows/progress"
)

// lostRun reports whether cause, why a run was stopped, means that its
// lease is, or may be, another worker's now: then nothing of the run is
// recorded.
func lostRun(cause error) bool {
	return errors.Is(cause, errLeaseStolen) || errors.Is(cause, errWorkerLapsed)
}

// fencedStore is the store of a job's reporter: it refuses every Append
// once the run's lease is lost or its worker has lapsed, so that a flow
// that goes on after that (one that resumed from a freeze, or was
// abandoned) writes nothing into the task the next attempt owns. An
// Append that finds the task gone stops the run (see taskGone).
type fencedStore struct {
	progress.Store
	j *job
}

func (s *fencedStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	if err := s.j.fenced(); err != nil {
		return "", err
	}
	last, err := s.Store.Append(ctx, taskID, events...)
	if errors.Is(err, progress.ErrNotFound) {
		s.j.taskGone()
	}
	return last, err
}

// fenced returns an error wrapping ErrLeaseLost if j may no longer write
// to its task.
func (j *job) fenced() error {
	if j.w.live.lapsed() {
		return fmt.Errorf("queue: task %s: %w: %w", j.task.ID, ErrLeaseLost, errWorkerLapsed)
	}
	if ctx := j.runCtx.Load(); ctx != nil {
		if cause := context.Cause(*ctx); lostRun(cause) {
			return fmt.Errorf("queue: task %s: %w: %w", j.task.ID, ErrLeaseLost, cause)
		}
	}
	return nil
}
