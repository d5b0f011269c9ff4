package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/flowsrun/flows/progress"
)

// errReleased is why a run's reports are refused once the run has let
// its lease go: it handed its task back, or ended it.
var errReleased = errors.New("queue: the run is over (its task was handed back or ended)")

// lostRun reports whether cause, why a run was stopped, means that its
// lease is, or may be, another worker's now: then nothing of the run is
// recorded.
func lostRun(cause error) bool {
	return errors.Is(cause, errLeaseStolen) || errors.Is(cause, errWorkerLapsed)
}

// errEndNotResent is why a worker's fence refuses to send a task's end
// again (see fencedStore.resentEnd).
var errEndNotResent = errors.New("queue: the end of the task is not sent again")

// fencedStore is the store of a job's reporter: it refuses every Append
// once the run's lease is lost, its worker has lapsed, or the run has let
// its lease go (see release), so that a flow that goes on after that
// (one that resumed from a freeze, or was abandoned) writes nothing into
// the task the next attempt owns. An Append that finds the task gone
// stops the run (see taskGone). It also bounds the reporter's resends of
// the task's end (see resentEnd).
type fencedStore struct {
	progress.Store
	j *job

	mu sync.Mutex
	// endKey is the append key of the last Append that ended the task
	// (see resentEnd).
	endKey string
}

func (s *fencedStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	// Held across the Append: release waits for it, so none that passed
	// the check lands after the task is handed back.
	s.j.fence.RLock()
	defer s.j.fence.RUnlock()
	if err := s.j.fenced(); err != nil {
		return "", err
	}
	if err := s.resentEnd(ctx, events); err != nil {
		return "", err
	}
	last, err := s.Store.Append(ctx, taskID, events...)
	if errors.Is(err, progress.ErrNotFound) {
		s.j.taskGone()
	}
	return last, err
}

// resentEnd returns an error wrapping errEndNotResent when events end
// the task and carry the append key of the Append before that ended it:
// the reporter sends the end again, after ErrNotSent or
// progress.ErrMaybeSent (see progress.TaskReporter), and that only while
// the worker has not stopped (see stopSignal) and the lease has not
// passed its deadline, as the worker last extended it: past that, another
// worker may run the task, and the end is left to the fallback of a
// worker whose end could not be recorded (see job.finished). The first
// Append of an end passes, as before.
func (s *fencedStore) resentEnd(ctx context.Context, events []progress.Event) error {
	key := progress.AppendKey(ctx)
	if key == "" || len(events) == 0 || !events[len(events)-1].Terminal() {
		return nil
	}
	s.mu.Lock()
	again := key == s.endKey
	s.endKey = key
	s.mu.Unlock()
	if !again {
		return nil
	}
	j := s.j
	select {
	case <-j.w.stopSignal():
		return fmt.Errorf("queue: task %s: %w: %w", j.task.ID, errEndNotResent, errShutdown)
	default:
	}
	// No heartbeat extends the lease while its end is recorded (see
	// run): the deadline is the last one set.
	if d := j.lease.Deadline; !d.IsZero() && !time.Now().Before(d) {
		return fmt.Errorf("queue: task %s: %w: the lease has passed its deadline", j.task.ID, errEndNotResent)
	}
	return nil
}

// fenced returns an error wrapping ErrLeaseLost if j may no longer write
// to its task.
func (j *job) fenced() error {
	if j.released.Load() {
		return fmt.Errorf("queue: task %s: %w: %w", j.task.ID, ErrLeaseLost, errReleased)
	}
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

// release fences j's reporter off for good: from now on its store
// refuses every Append (see fenced). It is called as the run lets its
// lease go (giveBack, ack, bury, dropGone), after the run's own last
// reports and before the backend is told, and once settle is done,
// whatever it did: a flow abandoned, or a goroutine a flow left behind,
// then writes nothing into a task handed back to another worker, or
// ended. It waits for an Append in flight (bounded by its context).
func (j *job) release() {
	if j.released.Load() {
		return
	}
	j.fence.Lock()
	defer j.fence.Unlock()
	j.released.Store(true)
}
