package pghistory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowsrun/flows/queue"
)

var _ queue.FinishHook = (*Store)(nil).Hook

// Bounds of the pause between two tries of Hook.
const (
	hookRetryMin = 50 * time.Millisecond
	hookRetryMax = 2 * time.Second
)

// Hook is a queue.FinishHook that saves the finished task (RecordOf): put
// it in queue.WorkerConfig.OnFinish.
//
// A Save that fails for any reason but an invalid record (the database
// is down or restarting, a connection was cut) is tried again, after a
// pause of 50 ms that doubles up to 2 s, until it succeeds or ctx ends;
// Save writes a task's row once, so trying again never makes two. The
// worker's ctx ends after WorkerConfig.FinishHookTimeout (a third of the
// lease by default). If the database is still away then, Hook returns
// the error of the last try that did not end with ctx, wrapped with
// queue.ErrRetryHooks: the worker gives the task back instead of
// acknowledging it, and the hooks run again later, until the row is
// written (up to WorkerConfig.MaxHookRetries, about a day by default).
// An invalid record (ErrInvalidRecord) is refused at once, and not tried
// again.
//
// One Hook of a Store at a time waits so. While it does, the others make
// one try (of at most 2 s) and, if it fails, return at once, wrapped
// with queue.ErrRetryHooks: a database away then holds one worker slot,
// not all of them, and the other slots go on running tasks, whose hooks
// run again later. Once one has waited all of its time in vain, none
// waits: each makes its one try, until a Save succeeds, so that a
// database away for long holds no slot, even on a worker of one.
func (s *Store) Hook(ctx context.Context, f queue.Finished) error {
	r := RecordOf(f)
	pause := hookRetryMin
	var last error   // the last error that ctx did not cause
	waiting := false // this call is the one that waits for the database
	defer func() {
		if waiting {
			s.waiting.Store(false)
		}
	}()
	for {
		try, cancel := ctx, context.CancelFunc(func() {})
		if !waiting && (s.waiting.Load() || s.away.Load()) {
			try, cancel = context.WithTimeout(ctx, hookRetryMax)
		}
		err := s.Save(try, r)
		cancel()
		if err == nil {
			s.away.Store(false)
			return nil
		}
		if errors.Is(err, ErrInvalidRecord) {
			return err
		}
		if last == nil || ctx.Err() == nil {
			last = err
		}
		if !waiting && (s.away.Load() || !s.waiting.CompareAndSwap(false, true)) {
			// Another call waits for the database, or one waited in
			// vain: this task comes back later, and its slot runs
			// another meanwhile.
			return fmt.Errorf("%w: %w", queue.ErrRetryHooks, last)
		}
		waiting = true
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			s.away.Store(true)
			return fmt.Errorf("%w: %w", queue.ErrRetryHooks, last)
		case <-t.C:
		}
		pause = min(2*pause, hookRetryMax)
	}
}

// RecordOf returns the Record of a finished task as a finish hook learns
// of it. Its start and end are those of the final snapshot (when the
// task's last run started and when it ended, as every view of the task
// shows them), else those of f: a lease that found the task ended (after
// a worker's death, or when its hooks run again after the database was
// away) runs the hooks later than the task ended, and ran nothing.
func RecordOf(f queue.Finished) Record {
	t := f.Task
	r := Record{
		TaskID: t.ID, Flow: t.Flow, State: f.Snapshot.State, Status: f.Snapshot.Details.Status,
		Inputs: t.Inputs, Snapshot: f.Snapshot, Attempts: f.Attempts(), MaxAttempts: t.MaxAttempts,
		HandBacks: t.HandBacks, Owner: t.Owner, RequeuedFrom: t.RequeuedFrom, Resume: t.Resume, Worker: f.Worker,
		TraceID: traceID(t.TraceParent), EnqueuedAt: t.EnqueuedAt, StartedAt: f.StartedAt, EndedAt: f.EndedAt,
	}
	if !f.Snapshot.EndedAt.IsZero() {
		r.StartedAt, r.EndedAt = f.Snapshot.StartedAt, f.Snapshot.EndedAt
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
