package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/progress"
)

// job is one leased task in the hands of the worker.
type job struct {
	w     *Worker
	base  context.Context // for backend and store calls: outlives Run's ctx
	lease *Lease
	task  *Task
	rep   *progress.TaskReporter
	log   atomic.Pointer[slog.Logger] // see logger
	// fin is the reporter's store when the worker has the one-step path
	// (see NewWorker).
	fin *finishingStore
	// startedAt is when the flow's run started (see runStarted); zero if
	// it did not, or if nothing reads it.
	startedAt time.Time
	// ran is set once the flow's run started under this lease (see
	// endLease).
	ran bool
	// flow is the run of the flow on the worker's pool (see run).
	flow flowCall

	// span traces the lease (see startSpan); endState is the terminal
	// state this job recorded, "" if it recorded none.
	span     trace.Span
	endState progress.State
	// fm is what the worker measures of the task's flow, nil when it
	// measures nothing (see startSpan).
	fm *flowMetrics
	// parent is the span the task's trace context names, once the
	// span is in base (see startSpan).
	parent remoteSpan
	// backoff is the flow's (registry.Policy.Backoff), else the worker's.
	backoff func(attempt int) time.Duration
	// runCtx is the context of the flow's run, once it starts: its cause
	// says whether the run's writes are refused (see fenced).
	runCtx atomic.Pointer[context.Context]
	// cancelRun cancels the flow's run, once it starts (see taskGone).
	cancelRun atomic.Pointer[context.CancelCauseFunc]
	// released is set once the run has let its lease go, and the
	// reporter's store refuses every Append; fence orders it after the
	// Appends in flight (see release).
	fence    sync.RWMutex
	released atomic.Bool
}

// logger returns the worker's logger with the task's id, flow and
// attempt, made on first use: most tasks log nothing.
func (j *job) logger() *slog.Logger {
	if l := j.log.Load(); l != nil {
		return l
	}
	t := j.task
	l := j.w.log.With("task_id", t.ID, "flow", t.Flow, "attempt", t.Attempt)
	if j.log.CompareAndSwap(nil, l) {
		return l
	}
	return j.log.Load()
}

// finishingStore is the store of a job's reporter when the worker's
// backend is the store and a finisher: once armed (by succeed), the Append that carries
// the terminal event also acknowledges the lease, in one step.
type finishingStore struct {
	progress.Store
	f     finisher
	lease *Lease
	armed atomic.Bool
	acked atomic.Bool
}

func (s *finishingStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	if !s.armed.Load() || len(events) == 0 || !events[len(events)-1].Terminal() {
		return s.Store.Append(ctx, taskID, events...)
	}
	last, acked, err := s.f.AppendAndAck(ctx, s.lease, events...)
	s.acked.Store(acked)
	return last, err
}

// taskStore is the store of a job's reporter when the backend is the
// store and appends to tasks it is given the record of: its appends tell
// the backend the task's flow (see taskAppender).
type taskStore struct {
	progress.Store
	app  taskAppender
	task *Task
}

func (s *taskStore) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	return s.app.AppendTask(ctx, s.task, events...)
}

// op returns the context of a backend or store call: it ends opTimeout
// (up to a second more) from now. It is shared with the calls made about
// the same time (see opctx), and ends by its deadline.
func (j *job) op() context.Context { return j.w.ops.Get() }

// handle takes one leased task to its end: a terminal state and an Ack,
// or a Retry.
func (w *Worker) handle(base context.Context, ld leased) {
	l := ld.lease
	t := l.Task
	j := &job{w: w, base: base, lease: l, task: t, backoff: w.cfg.Backoff}
	// The flow's policy, when it has one: its limits go back to the
	// backend with the lease (a retry waits for a slot again), and its
	// backoff replaces the worker's.
	entry, lookupErr := w.cfg.Registry.Lookup(t.Flow)
	if lookupErr == nil {
		t.Limit = LimitOf(entry.Policy)
		if entry.Policy.Backoff != nil {
			j.backoff = entry.Policy.Backoff
		}
	}
	if t.Limit.On() {
		defer w.limitReleased()
	}
	if t.Limit.Rate > 0 {
		w.rateStarted()
	}
	j.startSpan()
	defer j.endSpan()
	var store progress.Store = w.store
	if w.app != nil {
		store = &taskStore{Store: store, app: w.app, task: t}
	}
	if w.fin != nil {
		j.fin = &finishingStore{Store: store, f: w.fin, lease: l}
		store = j.fin
	}
	store = &fencedStore{Store: store, j: j}
	j.rep = progress.NewTaskReporter(store, t.ID, w.log) // it names the task itself
	j.rep.SetMaxReportBytes(w.cfg.MaxReportBytes)
	j.rep.SetMaxRunReportBytes(w.cfg.MaxRunReportBytes) // zero: RunReports times MaxReportBytes, or none

	// A task leased beyond what the worker asked for is not run, nor
	// looked at: it goes back unrun (see handBackUnrun). One held while
	// the worker has lapsed, or leased by a Fetch that a lapse
	// overlapped, is not looked at until a heartbeat gets through, and
	// then only if its lease survived the lapse; else it goes back
	// unrun, or is let go if lost (see waitLapse).
	if ld.extra {
		j.handBackUnrun("flows: task leased beyond what the worker asked for; handing it back without running it")
		return
	}
	if !j.waitLapse(ld.lapses) {
		return
	}

	// A task known to have ended is not started, nor checked against its
	// attempts and hand-backs: its hooks run again. It is one given back
	// for its hooks (HookRetries), or the backend read its state with the
	// lease.
	if t.HookRetries > 0 || ld.state.Terminal() {
		j.alreadyEnded()
		return
	}
	if t.Cancelled {
		j.cancelled()
		return
	}
	// A re-queued task logs where it came from when it first starts, which
	// takes its state first. Any other task is started at once: the store
	// refuses the start of a task that is unknown or has ended, and only
	// then is the state read (see alreadyEnded); unless the backend read
	// the state with the lease (see stateFetcher).
	requeued := false
	if t.RequeuedFrom != "" {
		snap, ok := j.snapshot()
		switch {
		case !ok:
			return
		case snap.State.Terminal():
			j.ended(snap)
			return
		}
		requeued = snap.State == progress.StatePending
	}
	if lookupErr != nil {
		// A flow of this module's own that this worker lacks is left
		// to workers that have it, up to MaxHandBacks.
		if leftToOthers(t.Flow) && t.HandBacks <= w.cfg.MaxHandBacks {
			j.leaveToOthers()
			return
		}
		if leftToOthers(t.Flow) {
			j.fail(fmt.Sprintf("gave up after %s: %v", plural(t.HandBacks, "hand-back"), lookupErr))
			return
		}
		j.fail(lookupErr.Error())
		return
	}
	if runs := t.Runs(); runs > 0 && t.Attempt > runs {
		j.fail(fmt.Sprintf("gave up after %s%s", plural(t.MaxAttempts, "attempt"), t.spentText()))
		return
	}
	if t.HandBacks > w.cfg.MaxHandBacks {
		j.fail(fmt.Sprintf("gave up after %s: %s", plural(t.HandBacks, "hand-back"), t.PreviousEnd.lostText()))
		return
	}
	start := startEvents(t)
	if requeued {
		msg := "re-queued from task " + t.RequeuedFrom
		if t.Resume {
			msg += ", resuming its completed steps"
		}
		start = append(start, progress.LogEvent(msg))
	}
	if ld.state != "" {
		// The backend, which is the store, read the state as it leased
		// the task (see stateFetcher): no need to learn it by recording
		// the start first. The start goes with the flow's first events.
		// (A terminal state was handled above.)
		j.rep.Report(start...)
		j.run(entry.Flow)
		return
	}
	ctx := j.op()
	_, err := w.store.Append(ctx, t.ID, start...)
	switch {
	case errors.Is(err, progress.ErrFinished):
		j.alreadyEnded()
		return
	case errors.Is(err, progress.ErrNotFound):
		j.logger().Error("flows: task has no progress record; dropping it")
		j.ack()
		return
	case err != nil:
		j.storeDown(err)
		return
	}
	j.run(entry.Flow)
}

// outcome is what a flow's Run returned, its result encoded (see
// examine), and why its context had been cancelled by then (nil if it
// had not).
type outcome struct {
	result json.RawMessage
	err    error
	cause  error
}

// examine returns the result of a flow's run encoded as JSON and its
// error, having asked of the error all that settling the run will ask
// (its text, whether it is permanent or invalid inputs, its retry
// delay). It runs in the flow's goroutine, under the recover of its
// panics, so that an error whose methods panic (a nil *MyError returned
// as an error) or a result whose MarshalJSON panics fails the task as a
// panic of the flow's, instead of crashing the worker that settles the
// run. A result that cannot be encoded is a permanent error: running
// the flow again would give another of its type. So is a result over
// limit bytes (a limit of 0 or less is none), which the reporter would
// refuse (see WorkerConfig.MaxReportBytes).
func examine(res any, err error, limit int) (json.RawMessage, error) {
	if err != nil {
		_ = err.Error()
		var pe *panicError
		_ = errors.Is(err, flow.ErrPermanent) || errors.Is(err, flow.ErrInvalidInputs) || errors.As(err, &pe)
		_, _ = flow.RetryDelay(err)
		return nil, err
	}
	data, err := resultJSON(res)
	if err != nil {
		return nil, flow.Permanent(fmt.Errorf("result cannot be encoded as JSON: %w", err))
	}
	if limit > 0 && len(data) > limit {
		return nil, flow.Permanent(fmt.Errorf("result of %d bytes is over the limit of %d bytes per report", len(data), limit))
	}
	return data, nil
}

// errGoexit is the error of a flow that ended its goroutine
// (runtime.Goexit, as testing's FailNow does) instead of returning.
var errGoexit = errors.New("flow ended its goroutine (runtime.Goexit) without returning")

// panicError is a panic recovered from a flow.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// run runs the flow and records its outcome.
func (j *job) run(f flow.Flow) {
	t := j.task
	// Not a child of a context of the worker's, which every run would
	// join and leave under one lock: shutdown cancels the tracked runs
	// (see stopFlows).
	ctx, cancel := context.WithCancelCause(j.base)
	defer cancel(nil)
	j.ran = true
	j.runStarted()
	if t.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, t.Timeout, errTimedOut)
		defer stop()
	}
	j.runCtx.Store(&ctx)
	j.cancelRun.Store(&cancel)
	// A Cancel that landed after the fetch read the task was announced
	// before this run was tracked: track finds it among the recent ones.
	defer j.w.untrack(t.ID, j.w.track(t.ID, cancel))

	hb := j.startHeartbeat(cancel)

	j.flow = flowCall{j: j, f: f, ctx: ctx, cancel: cancel}
	returned := j.w.pool.wait(j.w.pool.start(&j.flow), ctx, j.w.cfg.AbandonAfter)
	var out outcome
	cause := context.Cause(ctx)
	if returned {
		out = j.flow.out
		cause = out.cause
	}
	hb.stop()
	if !returned {
		j.logger().Warn("flows: flow did not return after its context was cancelled; abandoning it",
			"cause", cause, "waited", j.w.cfg.AbandonAfter)
	}
	j.settle(out, returned, cause)
	j.release()
}

// flowCall is the run of a job's flow on a goroutine of the worker's
// pool (see job.run): a call whose out the job reads once the pool's
// goroutine says the flow returned, and never when it abandons the flow.
type flowCall struct {
	j      *job
	f      flow.Flow
	ctx    context.Context
	cancel context.CancelCauseFunc
	out    outcome
}

func (c *flowCall) run() { c.j.callFlow(c.ctx, c.cancel, c.f, &c.out) }

// exited makes the outcome of a flow that ended its goroutine
// (runtime.Goexit) instead of returning: errGoexit, unless callFlow
// recovered a panic raised during the Goexit, which stays the error.
func (c *flowCall) exited() {
	if c.out.err == nil {
		c.out.err, c.out.cause = errGoexit, context.Cause(c.ctx)
	}
}

// callFlow runs f, the flow of j's task, with the run's context ctx,
// and writes its outcome into out, recovering its panic. It runs on a
// goroutine of the worker's pool (see flowCall), and returns to it
// unless the flow ends the goroutine (see flowCall.exited for the
// outcome then).
func (j *job) callFlow(ctx context.Context, cancel context.CancelCauseFunc, f flow.Flow, out *outcome) {
	t := j.task
	defer func() {
		if v := recover(); v != nil {
			j.logger().Error("flows: flow panicked", "panic", redact.Text(fmt.Sprint(v)), "stack", string(debug.Stack()))
			*out = outcome{err: &panicError{value: v}, cause: context.Cause(ctx)}
		}
	}()
	res, err := f.Run(j.flowContext(ctx, cancel), &flow.Task{
		ID: t.ID, Flow: t.Flow, Attempt: t.Attempt, Inputs: t.Inputs, Progress: j.rep,
		Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{
			Store: j.w.cfg.Checkpoints, TaskID: t.ID, Attempt: t.Attempt, ResumeFrom: t.resumeFrom(),
			Flush: j.rep.Flush, Progress: j.rep, Logger: j.w.log, MaxOutputBytes: j.w.cfg.MaxReportBytes,
		}),
	})
	// The cause is read as the flow returns: a cancellation, time
	// limit or shutdown landing after that does not undo its result.
	o := outcome{cause: context.Cause(ctx)}
	// What the flow returned is looked at here, under the recover
	// above, before it leaves the flow's goroutine.
	o.result, o.err = examine(res, err, j.w.cfg.MaxReportBytes)
	if hook := j.w.flowReturned; hook != nil {
		hook(t.ID)
	}
	*out = o
}
