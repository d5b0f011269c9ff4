package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/libflow"
	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/text"
	"github.com/flowsrun/flows/progress"
)

// settle records the outcome of a run. cause is why the flow's context
// was cancelled before the flow returned, nil if it was not.
func (j *job) settle(out outcome, returned bool, cause error) {
	t := j.task
	succeeded := returned && out.err == nil
	switch {
	case errors.Is(cause, errTaskCancelled):
		j.cancelled()
	case errors.Is(cause, errTimedOut):
		j.fail(fmt.Sprintf("timed out after %s", t.Timeout))
	case errors.Is(cause, errLeaseStolen):
		// Another worker holds the task now and will end it: nothing of
		// this run is recorded, a result neither (the store would
		// refuse it, see fencedStore).
		j.logger().Info("flows: the lease was lost; the run's outcome is dropped", "returned", returned)
	case errors.Is(cause, errBackendUnreachable):
		j.giveBackOnceReachable()
	case errors.Is(cause, errWorkerLapsed):
		// The task may have been taken back: if not, it is handed back
		// to run again at once (the lease guards it).
		j.giveBack(time.Now(), EndWorkerLost)
	case errors.Is(cause, errTaskGone):
		j.dropGone(returned)
	case errors.Is(cause, errShutdown):
		if succeeded {
			j.succeed(out.result)
			return
		}
		j.logger().Info("flows: handing the task back for another worker")
		// The run's reports are recorded before the task is handed
		// back, so that none lands after the next attempt's opening,
		// and before Run returns; giveBack then refuses the flow's
		// later ones (see release).
		_ = j.rep.Flush(j.op())
		j.giveBack(time.Now(), EndShutdown)
	case succeeded:
		j.succeed(out.result)
	default:
		j.failed(out.err)
	}
}

// failed handles an error returned by the flow: retry or FAILURE.
func (j *job) failed(err error) {
	t := j.task
	j.runFailed(err)
	var pe *panicError
	retryable := !errors.Is(err, flow.ErrPermanent) && !errors.Is(err, flow.ErrInvalidInputs) && !errors.As(err, &pe)
	if retryable && t.Attempt < t.Runs() {
		// The backoff goes by the attempts that count: hand-backs
		// (Task.HandBacks) do not lengthen it.
		delay := max(j.backoff(t.Attempt-t.HandBacks), 0)
		if d, ok := flow.RetryDelay(err); ok {
			delay = max(delay, d) // the flow was told when to come back
		}
		msg := j.w.cut(fmt.Sprintf("attempt %d failed: %s; retrying in %s", t.Attempt, errText(err), delay.Round(time.Millisecond)))
		j.logger().Info("flows: flow failed; retrying", "err", redact.Error(err), "retry_in", delay)
		ctx := j.op()
		_ = j.rep.Flush(ctx) // the flow's own reports come first
		_, aerr := j.w.store.Append(ctx, t.ID, progress.LogEvent(msg))
		if errors.Is(aerr, progress.ErrFinished) {
			// Ended meanwhile (cancelled).
			if len(j.w.hooks) > 0 {
				j.alreadyEnded()
			} else {
				j.ack()
			}
			return
		}
		j.giveBack(time.Now().Add(delay), EndFailed)
		return
	}
	reason := errText(err)
	// The runs of the flow (Task.Attempts), as the dead letter counts
	// them: not the leases that did not run it (Task.NoRuns).
	if n := t.Attempts(); n > 1 {
		reason = fmt.Sprintf("failed after %d attempts: %s", n, reason)
	}
	j.logger().Info("flows: flow failed", "err", redact.Error(err))
	j.fail(reason)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// errText is the text of err, an error of a flow, for the task's status
// and log, its span and the worker's logs: the errors of HTTP clients and
// SDKs quote URLs, and the credentials in them (redact.Text) stay out.
func errText(err error) string {
	if s := err.Error(); s != "" {
		return redact.Text(s)
	}
	return "flow failed"
}

// succeed records SUCCESS and acknowledges the task: in one step when the
// backend is the store and a finisher, unless that could not acknowledge
// it. The reporter sends the end again, with its append key, when the
// store could not be reached or its outcome is unknown (see end); a
// finisher that finds it recorded by the call it repeats reports the
// lease acknowledged if that call did it, so that it is not acknowledged
// twice.
func (j *job) succeed(result json.RawMessage) {
	if j.fin != nil {
		j.fin.armed.Store(true)
	}
	ctx := j.op()
	err := j.rep.SucceedJSON(ctx, result) // encoded and checked by examine
	if err == nil {
		j.noteEnd(progress.StateSuccess, "")
	}
	if j.fin != nil && j.fin.acked.Load() {
		return
	}
	j.finished(err)
}

// resultJSON encodes a flow's result as the task's final_result, as
// progress.EncodeData does (a json.RawMessage or []byte is kept when it
// is valid JSON, and a string otherwise), but returns the error of a
// result that cannot be encoded (a NaN, a channel, a func), which
// EncodeData would record as a string describing the error.
// Its output is valid JSON, which succeed records as it is.
func resultJSON(result any) (json.RawMessage, error) {
	switch d := result.(type) {
	case json.RawMessage, []byte:
		return progress.EncodeData(d), nil
	}
	return json.Marshal(result)
}

// cut returns s cut to the worker's MaxReportBytes, as the reporter cuts
// a status line (see progress.TaskReporter.SetMaxReportBytes), with a
// mark of the cut.
func (w *Worker) cut(s string) string {
	if w.cfg.MaxReportBytes < 0 {
		return s
	}
	return text.Cut(s, w.cfg.MaxReportBytes)
}

// fail records FAILURE with reason and buries the task.
func (j *job) fail(reason string) { j.end(reason, true) }

// cancelled records FAILURE with StatusCancelled and acknowledges the
// task: a cancelled task is not buried.
func (j *job) cancelled() { j.end(StatusCancelled, false) }

// end records FAILURE with reason, then buries the task if bury is set or
// acknowledges it. A task that had already ended (cancelled meanwhile, say)
// is handled as ended.
//
// The reporter sends a task's end (here and in succeed) again, with the
// same append key, when its Append was not sent (progress.ErrNotSent) or
// its outcome is unknown (progress.ErrMaybeSent: Redis restarting, a
// connection cut before the reply), after 10 ms doubling up to 250 ms,
// for up to 10 s (see progress.TaskReporter): a store that honours the
// key records the end once, and answers a resend whose first Append did
// record it as it answered that one. So the flow's result is not thrown
// away by a blip of the store, and the finish hooks run and a FAILURE is
// buried once, after the end that counts. The resends stop once the
// worker's fence refuses them (its lease lost, the worker lapsed or
// stopping, the lease's deadline passed, see fencedStore); an end still
// not recorded then gives the task back (see finished).
func (j *job) end(reason string, bury bool) {
	reason = j.w.cut(reason) // as the reporter would: the dead letter's reason is the status
	ctx := j.op()
	err := j.rep.Fail(ctx, reason)
	if err == nil {
		j.noteEnd(progress.StateFailure, reason)
	}
	switch {
	case err == nil:
		j.recorded(bury, reason)
	case errors.Is(err, progress.ErrFinished):
		j.alreadyEnded()
	default:
		j.finished(err)
	}
}

// recorded handles a task whose terminal state this worker has just
// recorded: it runs the finish hooks, if any, with the final snapshot,
// then buries the task (a FAILURE, if bury is set, with reason) or
// acknowledges it; unless a hook asked for the hooks to run again, which
// gives the task back (see hooksAgain). If the snapshot cannot be read,
// the task is given back: the worker that leases it next finds it ended
// (see ended).
func (j *job) recorded(bury bool, reason string) {
	if len(j.w.hooks) > 0 {
		snap, ok := j.snapshot()
		if !ok {
			return
		}
		if j.runHooks(snap, false) && j.hooksAgain() {
			return
		}
	}
	if bury {
		j.bury(reason)
		return
	}
	j.ack()
}

// alreadyEnded handles a task found ended by an earlier attempt (or by a
// cancellation meanwhile): see ended.
func (j *job) alreadyEnded() {
	if snap, ok := j.snapshot(); ok {
		j.ended(snap)
	}
}

// snapshot reads the task's snapshot. When it cannot, it handles the task
// and reports false: a task without a progress record (expired) is
// dropped, and one whose store failed is given back for later.
func (j *job) snapshot() (progress.Snapshot, bool) {
	ctx := j.op()
	snap, _, err := j.w.store.Snapshot(ctx, j.task.ID)
	switch {
	case errors.Is(err, progress.ErrNotFound):
		j.logger().Error("flows: task has no progress record; dropping it")
		j.ack()
		return snap, false
	case err != nil:
		j.storeDown(err)
		return snap, false
	}
	return snap, true
}

// ended handles a task found ended, whose snapshot snap is terminal: the
// finish hooks run, if any (and may give the task back again, see
// hooksAgain); then a FAILURE that an earlier attempt could not bury is
// buried, with its recorded reason, and anything else is acknowledged.
func (j *job) ended(snap progress.Snapshot) {
	if len(j.w.hooks) > 0 && j.runHooks(snap, true) && j.hooksAgain() {
		return
	}
	if snap.State == progress.StateFailure && snap.Details.Status != StatusCancelled {
		j.bury(snap.Details.Status)
		return
	}
	j.ack()
}

// finished handles the outcome of recording a task's terminal state:
// recorded, or already ended before (then, with hooks, as ended) are
// acknowledged, and so is a task without a progress record. If the store
// could not record it, even sent again (see end), the task is given back
// so that a later attempt does (storeDown): one that finds the task ended
// (an end whose outcome was unknown may have been recorded) does not run
// the flow again.
func (j *job) finished(recordErr error) {
	switch {
	case recordErr == nil:
		j.recorded(false, "")
	case errors.Is(recordErr, progress.ErrFinished) && len(j.w.hooks) > 0:
		j.alreadyEnded()
	case errors.Is(recordErr, progress.ErrFinished), errors.Is(recordErr, progress.ErrNotFound):
		j.ack()
	default:
		j.storeDown(recordErr)
	}
}

// storeDown gives the task back for later when the progress store
// failed: a hand-back that does not count as an attempt, after a backoff
// that grows with the task's hand-backs (see WorkerConfig.MaxHandBacks).
func (j *job) storeDown(err error) {
	delay := max(j.backoff(j.task.HandBacks+1), 0)
	j.logger().Error("flows: progress store failed; giving the task back", "err", err, "retry_in", delay,
		"hand_backs", j.task.HandBacks+1)
	j.giveBack(time.Now().Add(delay), EndStoreDown)
}

func (j *job) ack() {
	j.release()
	ctx := j.op()
	if err := j.w.backend.Ack(ctx, j.endLease()); err != nil {
		j.logger().Warn("flows: acknowledging the task failed", "err", err)
	}
}

// bury acknowledges the FAILED task and keeps it in the dead-letter set.
// On failure the task stays leased; the worker that takes it over once the
// lease passes buries it (see handle).
func (j *job) bury(reason string) {
	j.release()
	ctx := j.op()
	if err := j.w.backend.Bury(ctx, j.endLease(), reason); err != nil {
		j.logger().Warn("flows: burying the failed task failed", "err", err)
	}
}

// endLease returns the lease to let go of as the task ends (Ack, Bury)
// or is given back for its finish hooks: j.lease or, when the flow did
// not run under it and it is not the lease after a give-back for the
// hooks (which HookRetries counts), a copy with Lease.NoRun set, so that
// the backend leaves it out of the task's attempts (Task.NoRuns), as the
// history of package pghistory does (Finished.StartedAt is zero). Such a
// lease found the task cancelled or ended, its attempts or hand-backs
// spent, or its flow unknown; a hand-back (giveBack for any other end)
// keeps counting, see Task.Runs.
func (j *job) endLease() *Lease {
	if j.ran || j.task.PreviousEnd == EndHooksPending {
		return j.lease
	}
	l := *j.lease
	l.NoRun = true
	return &l
}

// giveBack gives the task back to run again at at; why says how this
// attempt ended. The run's reporter is fenced off first (see release).
func (j *job) giveBack(at time.Time, why AttemptEnd) {
	j.release()
	l := j.lease
	if why == EndHooksPending {
		l = j.endLease()
	}
	_ = j.w.giveBack(j.base, l, at, why)
}

// leftToOthers reports whether a worker that has no flow of that name
// leaves its tasks to workers that do, rather than fail them as an
// unknown flow: a flow of this module's own packages (named with
// libflow.Prefix, which registry.Register refuses for a host's flows),
// which a worker has only when its host set the package up, and which
// producers enqueue for workers that may not all have it (a
// notification, enqueued by a finish hook, taken by a worker without a
// Notifier in a rolling deploy).
func leftToOthers(flowName string) bool { return libflow.Reserved(flowName) }

// leaveToOthers hands back, unrun and not counted (EndHandedBack, with
// Lease.NoRun), the task of a flow the worker lacks but another may have
// (see leftToOthers), to be leased again after the backoff of its
// hand-backs so far plus one, as storeDown does. Each such hand-back
// counts in Task.HandBacks, so a task no worker can run ends FAILURE
// after WorkerConfig.MaxHandBacks of them (see handle).
func (j *job) leaveToOthers() {
	j.release()
	delay := max(j.backoff(j.task.HandBacks+1), 0)
	j.logger().Warn("flows: this worker lacks the task's flow; handing it back for a worker that has it",
		"retry_in", delay, "hand_backs", j.task.HandBacks+1)
	_ = j.w.giveBack(j.base, j.endLease(), time.Now().Add(delay), EndHandedBack)
}

// giveBackOnceReachable hands back, not counted (EndBackendDown), the
// task of a run stopped because the backend could not be reached
// (errBackendUnreachable): once a heartbeat gets through again, so that
// the hand-back does too, and to run again at once. It waits for that at
// most a Lease, or until the worker's shutdown stops its flows (see
// awaitContact); then it tries all the same, and again if that fails
// (see handBack).
func (j *job) giveBackOnceReachable() {
	j.release()
	if j.w.live.lapsed() {
		j.logger().Warn("flows: the backend cannot be reached; handing the task back once it answers")
		j.w.awaitContact(j.base)
	}
	j.w.handBack(j.base, j.lease, EndBackendDown)
}

// waitLapse returns true at once while the worker has not lapsed since
// the Fetch that leased j's task was sent, when its count of lapses was
// lapses (see liveness.lapsedSince). Else the worker holds the task,
// before its flow starts, while its heartbeats have lapsed, or have
// lapsed since (a Fetch that was already waiting in the backend as the
// worker lapsed leased it, the worker lapsed since, or it read the
// Fetch's reply only after a heartbeat ended the lapse): another worker
// may have taken the lease back, or may yet. The task does not run
// before a heartbeat gets through. waitLapse waits for one for as long
// as it could still hand the task back before another worker may take
// the lease back, as EndWorkerLost, or its lease ends, either of which
// would count an attempt that never ran (see
// liveness.awaitContactInTime: a quarter of an interval past the lapse,
// and handBackBy), or until the worker's shutdown stops its flows; then
// it extends the lease, which fails with ErrLeaseLost if it was taken
// back (see WorkerRegistry), and does so again if the worker lapsed
// again meanwhile. A lease extended after a heartbeat got through, with
// no lapse since, is the worker's until its liveness ends, as any other
// (see liveness), and the task runs on it, with no hand-back and no
// lease more: true. Else false: a lease taken back is let go (the lease
// that took it over says why the attempt ended), and one whose worker
// is still lapsed, or that could not be extended, is handed back unrun
// (see handBackUnrun).
func (j *job) waitLapse(lapses uint64) bool {
	for j.w.live.lapsedSince(lapses) {
		ctx, cancel := j.handBackBy()
		inTime := j.w.live.awaitContactInTime(ctx, j.w.stopSignal())
		cancel()
		if !inTime {
			j.handBackUnrun("flows: task leased while the worker's heartbeats had lapsed, and none got through in time (or the worker stops); handing it back without running it")
			return false
		}
		lapses = j.w.live.lapseCount()
		// The backend stamped the heartbeat that got through before
		// this Extend: if it finds the lease held, no other worker may
		// take it back before the worker's liveness ends again.
		err := j.w.backend.Extend(j.op(), j.lease, j.w.cfg.Lease)
		switch {
		case err == nil:
		case errors.Is(err, ErrCancelled):
			// Extended all the same: the task ends as cancelled (see
			// handle).
			j.task.Cancelled = true
		case errors.Is(err, ErrLeaseLost):
			j.release()
			j.logger().Warn("flows: the lease of a task leased while the worker's heartbeats had lapsed was taken back meanwhile; dropping it unrun", "err", err)
			return false
		default:
			j.handBackUnrun("flows: task leased while the worker's heartbeats had lapsed, whose lease could not be extended once one got through; handing it back without running it", "err", err)
			return false
		}
	}
	return true
}

// handBackBy returns a context that ends when a task waiting for its
// worker's lapse to end (see waitLapse) must be handed back for the
// hand-back to land before its lease's deadline (Lease.Deadline, which
// Extend moves): a third of a Lease before it, the least a running
// flow's lease has left when the Extend after a failed one goes out (see
// heartbeat). Without it, a Lease shorter than the wait (nothing makes
// it longer than the Heartbeat) could pass first, and another worker
// take the task over as EndLeaseExpired, an attempt counted that never
// ran. A lease without a deadline sets none.
func (j *job) handBackBy() (context.Context, context.CancelFunc) {
	if j.lease.Deadline.IsZero() {
		return context.Background(), func() {}
	}
	return context.WithDeadline(context.Background(), j.lease.Deadline.Add(-j.w.cfg.Lease/3))
}

// handBackUnrun hands back, before it runs, the task of a lease the
// worker does not run, and logs msg with args: one the backend leased
// beyond what the worker asked for (leased.extra), or one the worker
// holds while its heartbeats have lapsed and none got through in time
// (see waitLapse). It is not counted, as a lease that did not run the
// flow (EndHandedBack, with Lease.NoRun unless the lease was one of the
// task's HookRetries, see endLease), so that the task loses neither an
// attempt nor a run, and starts nothing beside an attempt that another
// worker may be starting. It does so at once, before another worker
// that judges this one dead can take the lease back as EndWorkerLost,
// which would count; if the backend does not answer, again once a
// heartbeat gets through (see handBack).
func (j *job) handBackUnrun(msg string, args ...any) {
	j.release()
	j.logger().Warn(msg, args...)
	j.w.handBack(j.base, j.endLease(), EndHandedBack)
}

// handBack gives the task of l back (giveBack) to run again at once; why
// is one of the ends that do not count (EndBackendDown, EndHandedBack).
// A hand-back that fails for another reason than ErrLeaseLost (Redis
// still flaky after an outage, an operation that timed out under load)
// is tried again after each heartbeat that gets through since the try
// was sent (see liveness.renewal): a worker that gave up on it left the
// task leased until its lease ran out, and the worker that took it over
// then counted the attempt (EndWorkerLost). It keeps trying for at most
// a Lease, past which the lease has run out anyway, or until the
// worker's shutdown stops its flows; then it tries a last time. A worker
// that sends no heartbeats (its backend keeps no registry) has nothing
// to pace the tries with, and tries once more at once. ErrLeaseLost ends
// the tries: another worker took the lease over, and said why the
// attempt ended.
func (w *Worker) handBack(base context.Context, l *Lease, why AttemptEnd) {
	ctx, cancel := context.WithTimeout(base, w.cfg.Lease)
	defer cancel()
	stop := w.stopSignal()
	for last := false; ; {
		beat := w.live.renewal()
		err := w.giveBack(base, l, time.Now(), why)
		if err == nil || errors.Is(err, ErrLeaseLost) || last {
			return
		}
		if beat == nil {
			last = true
			continue
		}
		select {
		case <-beat:
		case <-ctx.Done():
			last = true
		case <-stop:
			last = true
		}
	}
}

// awaitContact waits, while the worker has lapsed, until a heartbeat
// gets through again (see liveness.awaitContact): for at most a Lease,
// past which a lease taken before has run out anyway, or until the
// worker's shutdown stops its flows.
func (w *Worker) awaitContact(base context.Context) {
	ctx, cancel := context.WithTimeout(base, w.cfg.Lease)
	defer cancel()
	w.live.awaitContact(ctx, w.stopSignal())
}

// giveBack gives the task of l back (Backend.Retry) to run again at at;
// a failure is logged, and returned.
func (w *Worker) giveBack(base context.Context, l *Lease, at time.Time, why AttemptEnd) error {
	ctx, cancel := context.WithTimeout(base, opTimeout)
	defer cancel()
	err := w.backend.Retry(ctx, l, at, why)
	if err != nil {
		w.log.Warn("flows: giving the task back failed", "task_id", l.Task.ID, "err", err)
	}
	return err
}
