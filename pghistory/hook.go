package pghistory

import (
	"context"

	"github.com/flowsrun/flows/queue"
)

var _ queue.FinishHook = (*Store)(nil).Hook

// Hook is a queue.FinishHook that saves the finished task (RecordOf): put
// it in queue.WorkerConfig.OnFinish. Its error (the database is down, say)
// is logged by the worker; the task is acknowledged all the same, and its
// row is missing from the history (see the package documentation).
func (s *Store) Hook(ctx context.Context, f queue.Finished) error {
	return s.Save(ctx, RecordOf(f))
}

// RecordOf returns the Record of a finished task as a finish hook learns
// of it.
func RecordOf(f queue.Finished) Record {
	t := f.Task
	r := Record{
		TaskID: t.ID, Flow: t.Flow, State: f.Snapshot.State, Status: f.Snapshot.Details.Status,
		Inputs: t.Inputs, Snapshot: f.Snapshot, Attempts: t.Attempt, MaxAttempts: t.MaxAttempts,
		HandBacks: t.HandBacks, Owner: t.Owner, RequeuedFrom: t.RequeuedFrom, Worker: f.Worker,
		TraceID: traceID(t.TraceParent), EnqueuedAt: t.EnqueuedAt, StartedAt: f.StartedAt, EndedAt: f.EndedAt,
	}
	if f.StartedAt.IsZero() && r.Attempts > 0 {
		// The lease the hook runs under did not run the flow: it found
		// the task ended, cancelled, unknown or out of attempts.
		r.Attempts--
	}
	return r
}

// traceID returns the trace id of a W3C traceparent
// ("00-<trace id>-<span id>-<flags>"), "" for anything else.
func traceID(traceparent string) string {
	if len(traceparent) < 55 || traceparent[2] != '-' || traceparent[35] != '-' {
		return ""
	}
	return traceparent[3:35]
}
