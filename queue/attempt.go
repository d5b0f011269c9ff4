package queue

import (
	"fmt"

	"github.com/flowsrun/flows/progress"
)

// AttemptEnd says why an attempt of a task ended without ending the task:
// the reason the next attempt announces in the task's log as it starts
// (see Task.PreviousEnd).
type AttemptEnd string

// The ways an attempt ends without ending its task. The first three
// count against the task's MaxAttempts; the hand-backs, which are no
// fault of the flow's, do not (see Counts). EndHooksPending is the end of
// a lease after its task ended: neither an attempt nor a hand-back.
const (
	// EndFailed: the flow returned an error that is retried.
	EndFailed AttemptEnd = "failed"
	// EndWorkerLost: the worker stopped writing its heartbeat into the
	// backend's worker registry (killed, frozen, its machine gone), and
	// another worker took the task over before the lease passed.
	EndWorkerLost AttemptEnd = "worker lost"
	// EndLeaseExpired: the lease passed without being extended, and
	// another worker took the task over. A worker the registry does not
	// know of, or a backend without one, ends this way when it dies.
	EndLeaseExpired AttemptEnd = "lease expired"
	// EndShutdown: the worker shut down before the flow returned and
	// handed the task back (WorkerConfig.ShutdownGrace). It does not
	// count.
	EndShutdown AttemptEnd = "handed back at shutdown"
	// EndStoreDown: the worker could not record the task's progress and
	// handed the task back for later. It does not count.
	EndStoreDown AttemptEnd = "progress store unavailable"
	// EndBackendDown: the worker's heartbeats could not reach the
	// backend for its liveness window (Redis down, a network split), so
	// it stopped the flow, and handed the task back once the backend
	// answered again (see WorkerConfig.Heartbeat). It does not count. A
	// worker that took the task over meanwhile, the lost one's lease
	// being taken back, says EndWorkerLost instead, which counts.
	EndBackendDown AttemptEnd = "backend unreachable"
	// EndHandedBack: the worker handed the task back before running it:
	// a backend leased it more tasks than it asked for, it leased the
	// task while its heartbeats had lapsed and none got through in time
	// to run it (see WorkerConfig.Heartbeat), or it lacks the task's
	// flow, one of this module's own that another worker may have (see
	// WorkerConfig.Registry). It does not count.
	EndHandedBack AttemptEnd = "handed back"
	// EndHooksPending: the task had ended, and a finish hook asked for
	// the hooks to run again later (ErrRetryHooks); the worker gave the
	// task back for that. It does not count, and it is no hand-back
	// either: a Backend's Retry counts it in Task.HookRetries instead of
	// Task.HandBacks.
	EndHooksPending AttemptEnd = "finish hooks to run again"
)

// Counts reports whether an attempt that ended this way counts against
// the task's MaxAttempts. A hand-back that is no fault of the flow's (its
// worker shut down, the progress store or the backend could not be
// reached, the worker had not asked for the task) does not: a Backend's
// Retry counts it in Task.HandBacks instead, and the task gets one run
// more. Nor does EndHooksPending, which Retry counts in
// Task.HookRetries. Any other end, "" and the ends this package does not
// know of included, counts.
func (e AttemptEnd) Counts() bool {
	switch e {
	case EndShutdown, EndStoreDown, EndBackendDown, EndHandedBack, EndHooksPending:
		return false
	}
	return true
}

// describe says how attempt n ended, as the log of the next one tells
// it.
func (e AttemptEnd) describe(n int) string {
	switch e {
	case EndFailed:
		return fmt.Sprintf("attempt %d failed", n)
	case EndWorkerLost:
		return fmt.Sprintf("the worker of attempt %d was lost", n)
	case EndLeaseExpired:
		return fmt.Sprintf("attempt %d timed out: its lease expired", n)
	case EndShutdown:
		return fmt.Sprintf("attempt %d was handed back at shutdown", n)
	case EndStoreDown:
		return fmt.Sprintf("attempt %d could not record its progress", n)
	case EndBackendDown:
		return fmt.Sprintf("the worker of attempt %d could not reach the backend", n)
	case EndHandedBack:
		return fmt.Sprintf("attempt %d was handed back before it ran", n)
	case EndHooksPending:
		return fmt.Sprintf("lease %d gave the ended task back for its finish hooks", n)
	case "":
		return fmt.Sprintf("attempt %d did not finish", n)
	}
	return fmt.Sprintf("attempt %d ended: %s", n, string(e))
}

// lostText is the end of the status of a task whose attempts are spent
// without any of them ending it: why the last one ended.
func (e AttemptEnd) lostText() string {
	if e == "" || e == EndWorkerLost {
		return "worker lost"
	}
	return string(e)
}

// spentText is the end of the status of task t whose attempts are
// spent: ": " and why the last attempt ended (see lostText) when its last
// lease was that attempt, else how the last attempt that counted ended
// (Task.CountedEnd, see countedText) and the hand-back that followed it,
// as ": the worker was lost (then handed back: progress store
// unavailable)", rather than blame the hand-back for the attempts spent.
// A record written before backends kept CountedEnd says only what
// followed the attempt: " (then handed back: progress store
// unavailable)".
func (t *Task) spentText() string {
	e := t.PreviousEnd
	if e.Counts() {
		return ": " + e.lostText()
	}
	then := " (then handed back: " + string(e) + ")"
	if t.CountedEnd == "" {
		return then
	}
	return ": " + t.CountedEnd.countedText() + then
}

// countedText says how the last attempt that counted ended, as describe
// does without its number, for the status of a task whose attempts are
// spent and whose last lease was handed back after that attempt.
func (e AttemptEnd) countedText() string {
	switch e {
	case EndFailed:
		return "the flow failed"
	case EndWorkerLost:
		return "the worker was lost"
	case EndLeaseExpired:
		return "the lease expired"
	}
	return "it ended: " + string(e)
}

// StatusRetrying is the status line of a task whose attempt after the
// first has started, until its flow sets one: "Running (attempt 2 of
// 3)". A worker passes the runs the task gets as maxAttempts: its
// MaxAttempts plus its hand-backs (see Task.Runs).
func StatusRetrying(attempt, maxAttempts int) string {
	if maxAttempts > 0 {
		return fmt.Sprintf("Running (attempt %d of %d)", attempt, maxAttempts)
	}
	return fmt.Sprintf("Running (attempt %d)", attempt)
}

// startEvents are the events that record the start of t's run: the
// state PROGRESS and, for an attempt after the first, the attempt's
// boundary. The boundary is a log step saying which attempt starts and
// why the one before ended, then the progress reset to 0: the progress
// bar goes back only right after the step that says why, and the steps
// of the new attempt follow it.
func startEvents(t *Task) []progress.Event {
	if t.Attempt <= 1 {
		return []progress.Event{{Type: progress.EventState, State: progress.StateProgress, Status: "Running"}}
	}
	runs := t.Runs()
	status := StatusRetrying(t.Attempt, runs)
	of := ""
	if runs > 0 {
		of = fmt.Sprintf(" of %d", runs)
	}
	msg := fmt.Sprintf("attempt %d%s starts: %s", t.Attempt, of, t.PreviousEnd.describe(t.Attempt-1))
	switch {
	case t.PreviousEnd.Counts():
	case t.HandBacks > 1:
		msg += fmt.Sprintf(" (not counted; %d hand-backs so far)", t.HandBacks)
	default:
		msg += " (not counted)"
	}
	return []progress.Event{
		{Type: progress.EventState, State: progress.StateProgress, Status: status},
		progress.LogEvent(msg),
		{Type: progress.EventProgress, Progress: 0, Status: status},
	}
}
