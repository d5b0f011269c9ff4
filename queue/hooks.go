package queue

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/flowsrun/flows/progress"
)

// FinishHook is code a host runs when a task ends: see
// WorkerConfig.OnFinish for when it is called and what it may assume. An
// error it returns is logged with the task; it changes nothing else.
type FinishHook func(ctx context.Context, f Finished) error

// Finished is what a FinishHook learns of a task that has reached SUCCESS
// or FAILURE. Hooks must treat it as read-only: the hooks of one task
// share it.
type Finished struct {
	// Task is the task's queue record as the worker leased it: id, flow,
	// inputs, EnqueuedAt (when the task was accepted), RequeuedFrom, and
	// Attempt, the number of the lease the hook runs under. When
	// FoundEnded is set that lease did not run the flow: Attempt is then
	// one more than the run that ended the task, if any ran.
	Task *Task
	// Snapshot is the task's final snapshot, as the store holds it after
	// the terminal event: State is SUCCESS or FAILURE, Details.Status
	// the reason of a FAILURE (StatusCancelled for a cancellation),
	// Details.FinalResult the result of a SUCCESS.
	Snapshot progress.Snapshot
	// Worker is the name of the worker running the hook.
	Worker string
	// StartedAt is when this worker started the run of the flow that
	// ended the task; zero when no run of this lease did (the task ended
	// without running: cancelled while pending, unknown flow, attempts
	// spent; or FoundEnded).
	StartedAt time.Time
	// EndedAt is when this worker recorded the terminal state or, when
	// FoundEnded is set, when it found the task ended.
	EndedAt time.Time
	// FoundEnded is set when the terminal state was recorded by another
	// than this worker: by Broker.Cancel of a task still PENDING (leased
	// or not), or by a worker that died (or could not reach the backend)
	// between recording the end and acknowledging the task, whose hooks
	// may have run already, in whole or in part.
	FoundEnded bool
}

// runHooks calls the worker's finish hooks, one after the other in the
// order of WorkerConfig.OnFinish, for a task whose terminal state is
// recorded, with snap its final snapshot; found says that the worker
// found it ended (Finished.FoundEnded). All of them together get
// FinishHookTimeout: past it the worker stops waiting and goes on with
// the task; the hooks' context is cancelled, those not called yet are
// skipped, and the goroutine calling them is left to end on its own.
// Errors and panics are logged.
func (j *job) runHooks(snap progress.Snapshot, found bool) {
	w := j.w
	f := Finished{
		Task: j.task, Snapshot: snap, Worker: w.cfg.Name,
		StartedAt: j.startedAt, EndedAt: time.Now(), FoundEnded: found,
	}
	ctx, cancel := context.WithTimeout(j.base, w.cfg.FinishHookTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, hook := range w.hooks {
			if ctx.Err() != nil {
				j.logger().Error("flows: finish hook skipped: the hooks' time is up", "hook", i)
				continue
			}
			j.callHook(ctx, i, hook, f)
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		j.logger().Error("flows: finish hooks did not return in time; going on without them",
			"timeout", w.cfg.FinishHookTimeout, "hooks", len(w.hooks))
	}
}

// callHook calls hook, the i-th finish hook, and logs what goes wrong.
func (j *job) callHook(ctx context.Context, i int, hook FinishHook, f Finished) {
	defer func() {
		if v := recover(); v != nil {
			j.logger().Error("flows: finish hook panicked", "hook", i, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	if err := hook(ctx, f); err != nil {
		j.logger().Error("flows: finish hook failed", "hook", i, "state", f.Snapshot.State, "err", err)
	}
}
