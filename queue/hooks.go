package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/progress"
)

// FinishHook is code a host runs when a task ends: see
// WorkerConfig.OnFinish for when it is called and what it may assume. An
// error it returns is logged with the task; it changes nothing else,
// unless it wraps ErrRetryHooks.
//
// A hook that could not do its work for now (the database it writes to
// is away) returns an error wrapping ErrRetryHooks: then the worker does
// not acknowledge the task but gives it back to the backend, and the
// lease that takes it next, after a pause, finds it ended and calls the
// hooks again, every one of them (Finished.FoundEnded), until none asks
// for that (see WorkerConfig.MaxHookRetries for the bound).
type FinishHook func(ctx context.Context, f Finished) error

// ErrRetryHooks is what a FinishHook wraps in its error to have the
// hooks of the task run again later: see FinishHook. The task's state is
// recorded already and stays as it is; its flow does not run again.
var ErrRetryHooks = errors.New("queue: run the finish hooks again later")

// Finished is what a FinishHook learns of a task that has reached SUCCESS
// or FAILURE. Hooks must treat it as read-only: the hooks of one task
// share it.
type Finished struct {
	// Task is the task's queue record as the worker leased it: id, flow,
	// inputs, EnqueuedAt (when the task was accepted), RequeuedFrom, and
	// Attempt, the number of the lease the hook runs under. When
	// FoundEnded is set that lease did not run the flow: Attempt is then
	// one more than the run that ended the task, if any ran. The leases
	// that only ran the hooks again (ErrRetryHooks) are left out of it,
	// and so are the earlier leases that did not run the flow
	// (Task.NoRuns: one that found the task ended and gave it back for
	// its hooks, or one handed back before it ran, say): Attempt is the
	// lease's number less NoRuns and the hooks' re-runs before this
	// lease (a lease lost after the end, say to a worker's death, is
	// not left out), so that Finished.Attempts is the runs of the flow.
	// Since Attempt is adjusted so, Task.Attempts of this copy is not
	// the attempts of the flow.
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

// Attempts returns the runs of the flow the task has had, as its history
// counts them: the lease's Task.Attempt, less this lease when it did not
// run the flow (StartedAt zero: it found the task ended or cancelled, or
// its attempts spent).
func (f Finished) Attempts() int {
	n := f.Task.Attempt
	if f.StartedAt.IsZero() && n > 0 {
		n--
	}
	return n
}

// runHooks calls the worker's finish hooks, one after the other in the
// order of WorkerConfig.OnFinish, for a task whose terminal state is
// recorded, with snap its final snapshot; found says that the worker
// found it ended (Finished.FoundEnded). All of them together get
// FinishHookTimeout: past it the worker stops waiting and goes on with
// the task, once the hook in progress has had hookGrace to return (one
// that gives up as its context ends is heard); the hooks' context is
// cancelled, those not called yet are skipped, and the goroutine calling
// them is left to end on its own. They run on a goroutine of the
// worker's pool (see pool), which the task's flow has most often just
// given back. Errors and panics are logged, and so is a hook that ends
// its goroutine (runtime.Goexit), which skips the hooks after it. It
// reports whether a hook asked for the hooks to run again
// (ErrRetryHooks), also one whose call returned before a later hook ran
// out of time.
func (j *job) runHooks(snap progress.Snapshot, found bool) (again bool) {
	w := j.w
	task := j.task
	if task.HookRetries > 0 || task.NoRuns > 0 {
		// The earlier leases that did not run the flow are left out of
		// the attempt the hooks see (see Finished.Task): those NoRuns
		// counts, and the hooks' re-runs before this lease. HookRetries
		// counts this lease too when it is the one a give-back for the
		// hooks was for (PreviousEnd, as endLease reads it), not when
		// that lease was handed back before it ran them: then this lease
		// is one more. A task given back for its hooks has ended, and
		// every lease after only runs them (Attempt is then one more than
		// the attempts of the flow, as for the first lease that found the
		// task ended).
		c := *task
		c.Attempt = task.Attempt - task.NoRuns - task.HookRetries
		if task.PreviousEnd == EndHooksPending {
			c.Attempt++
		}
		task = &c
	}
	f := Finished{
		Task: task, Snapshot: snap, Worker: w.cfg.Name,
		StartedAt: j.startedAt, EndedAt: time.Now(), FoundEnded: found,
	}
	ctx, cancel := context.WithTimeout(j.base, w.cfg.FinishHookTimeout)
	defer cancel()
	c := &hookCall{j: j, ctx: ctx, f: f}
	if !w.pool.wait(w.pool.start(c), ctx, hookGrace(w.cfg.FinishHookTimeout)) {
		j.logger().Error("flows: finish hooks did not return in time; going on without them",
			"timeout", w.cfg.FinishHookTimeout, "hooks", len(w.hooks))
	}
	return c.again.Load()
}

// hookCall is the calls of a task's finish hooks on a goroutine of the
// worker's pool (see runHooks). Once runHooks stops waiting for it, it
// is left to that goroutine: runHooks reads only again.
type hookCall struct {
	j   *job
	ctx context.Context
	f   Finished
	// again is set once a hook asks for the hooks to run again.
	again atomic.Bool
	// hook is the hook being called, for exited.
	hook int
}

// run calls the worker's hooks one after the other, skipping those
// whose turn comes after the hooks' time is up.
func (c *hookCall) run() {
	for i, hook := range c.j.w.hooks {
		if c.ctx.Err() != nil {
			c.j.logger().Error("flows: finish hook skipped: the hooks' time is up", "hook", i)
			continue
		}
		c.hook = i
		if c.j.callHook(c.ctx, i, hook, c.f) {
			c.again.Store(true)
		}
	}
}

// exited logs a hook that ended its goroutine (runtime.Goexit): the
// hooks after it are not called.
func (c *hookCall) exited() {
	c.j.logger().Error("flows: finish hook ended its goroutine (runtime.Goexit) without returning; the hooks after it are skipped",
		"hook", c.hook, "hooks", len(c.j.w.hooks))
}

// hookGrace is how long the worker waits, once the hooks' time is up, for
// the hook in progress to return: a tenth of their time, at most a
// second. Within the lease, since FinishHookTimeout is at most half of
// it.
func hookGrace(timeout time.Duration) time.Duration { return min(timeout/10, time.Second) }

// callHook calls hook, the i-th finish hook, and logs what goes wrong. It
// reports whether the hook asked for the hooks to run again.
func (j *job) callHook(ctx context.Context, i int, hook FinishHook, f Finished) (again bool) {
	defer func() {
		if v := recover(); v != nil {
			j.logger().Error("flows: finish hook panicked", "hook", i, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	err := hook(ctx, f)
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrRetryHooks):
		j.logger().Warn("flows: finish hook failed; the hooks will run again later", "hook", i, "state", f.Snapshot.State, "err", err)
		return true
	}
	j.logger().Error("flows: finish hook failed", "hook", i, "state", f.Snapshot.State, "err", err)
	return false
}

// hooksAgain gives an ended task back for its finish hooks to run again
// (EndHooksPending) after the worker's Backoff of its hook retries so
// far plus one, and reports true; past WorkerConfig.MaxHookRetries it
// logs that it gives up and reports false: the caller then acknowledges
// (or buries) the task as it would have.
func (j *job) hooksAgain() bool {
	n := j.task.HookRetries + 1
	if n > j.w.cfg.MaxHookRetries {
		j.logger().Error("flows: finish hooks still ask to run again; giving up on them",
			"hook_retries", j.task.HookRetries)
		return false
	}
	delay := max(j.w.cfg.Backoff(n), 0)
	j.logger().Warn("flows: giving the ended task back for its finish hooks to run again",
		"retry_in", delay, "hook_retries", n)
	j.giveBack(time.Now().Add(delay), EndHooksPending)
	return true
}
