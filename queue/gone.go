package queue

import "errors"

// errTaskGone is the cause of a run stopped because its task's progress
// record is gone from the store while the flow ran: deleted, expired, or
// lost with the data of a Redis restarted without persistence. Nothing
// the run would record has a task to go to.
var errTaskGone = errors.New("queue: the task's progress record is gone")

// taskGone stops the job's run, if it has started, because the store
// reported that its task no longer exists (see errTaskGone). A flow that
// keeps reporting would otherwise run to its end, calling its model and
// tools, for a task nobody can see any more.
func (j *job) taskGone() {
	if cancel := j.cancelRun.Load(); cancel != nil {
		(*cancel)(errTaskGone)
	}
}

// dropGone settles a run stopped by taskGone: it releases the lease, if
// the backend still has it, so that no worker runs the task again. A
// backend that lost its data has lost the lease too.
func (j *job) dropGone(returned bool) {
	j.logger().Warn("flows: the task's progress record is gone (deleted, expired, or lost by the store); the run was stopped and the task is dropped",
		"returned", returned)
	j.release()
	if err := j.w.backend.Ack(j.op(), j.lease); err != nil && !errors.Is(err, ErrLeaseLost) {
		j.logger().Warn("flows: acknowledging the task failed", "err", err)
	}
}
