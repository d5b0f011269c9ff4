package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowsrun/flows/progress"
)

// Listing limits.
const (
	// DefaultListLimit is the page size of a listing whose Limit is zero.
	DefaultListLimit = 50
	// MaxListLimit is the largest page a listing returns.
	MaxListLimit = 1000
)

// ErrInvalidQuery is wrapped by the errors of a listing or a cancellation
// by filter that cannot be run as asked: an unknown state, a limit out of
// range, a malformed or foreign cursor. The HTTP layer answers it with
// 400.
var ErrInvalidQuery = errors.New("queue: invalid query")

// TaskSummary is a task as a listing shows it: its queue record and the
// headline of its progress snapshot.
type TaskSummary struct {
	// ID is the task's id.
	ID string `json:"task_id"`
	// Flow is the name of its flow.
	Flow string `json:"flow"`
	// State is its progress state.
	State progress.State `json:"state"`
	// Progress is its percentage, 0 to 100.
	Progress int `json:"progress"`
	// Status is its status line (the reason of a FAILURE).
	Status string `json:"status"`
	// Attempt is the number of its current or last run of its flow (0
	// before the first): Task.Attempts, as every view of a task shows it
	// (GET /tasks/{id}/, flows show). MaxAttempts is the most it gets
	// that count (a hand-back through no fault of its flow adds one, see
	// Task.HandBacks). The leases that only ran its finish hooks again
	// (ErrRetryHooks) are left out, as in DeadTask.Attempts, while it
	// waits to run them again too (Task.HooksDue); a lease lost after the
	// task ended (to a worker's death, say) is not.
	Attempt     int `json:"attempt"`
	MaxAttempts int `json:"max_attempts"`
	// HandBacks counts its runs handed back through no fault of its flow
	// (Task.HandBacks), which do not count: of its Attempt runs so far,
	// Attempt - HandBacks count, and it gets Runs() in all.
	HandBacks int `json:"hand_backs,omitempty"`
	// Owner is the caller that started it (Task.Owner), "" for none.
	Owner string `json:"owner,omitempty"`
	// RequeuedFrom is the dead task it was re-queued from, if any.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	// Resume is set when it resumes that dead task (Task.Resume).
	Resume bool `json:"resume,omitempty"`
	// Cancelled is set once a cancellation was asked for.
	Cancelled bool `json:"cancelled,omitempty"`
	// EnqueuedAt is when it was accepted; StartedAt when its current (or
	// last) run started, zero if none did; EndedAt when it reached
	// SUCCESS or FAILURE, zero before.
	EnqueuedAt time.Time `json:"enqueued_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
}

// ChangedAt is when the task entered its current state: EnqueuedAt for
// PENDING, StartedAt for PROGRESS, EndedAt for SUCCESS and FAILURE
// (falling back to the earlier times when a later one is unknown).
// Listings are ordered by it, newest first.
func (s *TaskSummary) ChangedAt() time.Time {
	switch {
	case s.State.Terminal() && !s.EndedAt.IsZero():
		return s.EndedAt
	case s.State != progress.StatePending && !s.StartedAt.IsZero():
		return s.StartedAt
	}
	return s.EnqueuedAt
}

// Runs is the number of runs the task gets, as Task.Runs tells it:
// MaxAttempts plus HandBacks; 0 when MaxAttempts is.
func (s *TaskSummary) Runs() int {
	if s.MaxAttempts <= 0 {
		return 0
	}
	return s.MaxAttempts + s.HandBacks
}

// summarize makes the summary of task t (nil when its queue record is
// gone) with snapshot snap.
func summarize(id string, t *Task, snap progress.Snapshot) TaskSummary {
	s := TaskSummary{
		ID: id, State: snap.State, Progress: snap.Details.Progress, Status: snap.Details.Status,
		StartedAt: snap.StartedAt, EndedAt: snap.EndedAt,
	}
	if t != nil {
		s.Flow, s.Attempt, s.MaxAttempts, s.HandBacks = t.Flow, t.Attempts(), t.MaxAttempts, t.HandBacks
		s.RequeuedFrom, s.Resume, s.Cancelled, s.EnqueuedAt, s.Owner = t.RequeuedFrom, t.Resume, t.Cancelled, t.EnqueuedAt, t.Owner
	}
	return s
}

// ListOptions selects and pages the tasks of a listing. The zero value
// lists every task, DefaultListLimit at a time.
type ListOptions struct {
	// State keeps the tasks in that state; "" keeps all.
	State progress.State
	// Flow keeps the tasks of that flow; "" keeps all.
	Flow string
	// Owner keeps the tasks of that owner (Task.Owner, exactly); "" keeps
	// all. A backend that has no index by owner (Redis) filters the
	// tasks it reads for a page, and reads a bounded number of them: a
	// page filtered by owner may hold fewer tasks than Limit, even none,
	// and still have a Next. Follow Next until it is "" to see them all.
	Owner string
	// Since and Until keep the tasks that entered their current state
	// (TaskSummary.ChangedAt; for a finished task, when it ended) in the
	// range [Since, Until): Since inclusive, Until exclusive, both to the
	// millisecond, as listings order tasks. A zero time leaves that end
	// open. Until before Since is an invalid query.
	Since, Until time.Time
	// Limit is the most tasks of the page, 1 to MaxListLimit; zero means
	// DefaultListLimit.
	Limit int
	// Cursor continues a listing after the page whose TaskPage.Next it
	// is; "" starts at the newest task. A cursor holds its position only:
	// pass the same filters with it.
	Cursor string
}

// Match reports whether o selects the task s: its state, flow, owner and
// time range (not its cursor).
func (o *ListOptions) Match(s *TaskSummary) bool {
	if o.State != "" && s.State != o.State || o.Flow != "" && s.Flow != o.Flow || o.Owner != "" && s.Owner != o.Owner {
		return false
	}
	at := s.ChangedAt().UnixMilli()
	return (o.Since.IsZero() || at >= o.Since.UnixMilli()) && (o.Until.IsZero() || at < o.Until.UnixMilli())
}

// checkRange validates a time range [since, until).
func checkRange(since, until time.Time) error {
	if !since.IsZero() && !until.IsZero() && until.UnixMilli() < since.UnixMilli() {
		return fmt.Errorf("%w: until %s is before since %s", ErrInvalidQuery,
			until.UTC().Format(time.RFC3339Nano), since.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// check validates o and fills in the default limit.
func (o *ListOptions) check() error {
	if o.State != "" && !o.State.Valid() {
		return fmt.Errorf("%w: unknown state %q (want PENDING, PROGRESS, SUCCESS or FAILURE)", ErrInvalidQuery, o.State)
	}
	if err := checkRange(o.Since, o.Until); err != nil {
		return err
	}
	if o.Limit == 0 {
		o.Limit = DefaultListLimit
	}
	if o.Limit < 1 || o.Limit > MaxListLimit {
		return fmt.Errorf("%w: limit %d out of range 1-%d", ErrInvalidQuery, o.Limit, MaxListLimit)
	}
	return nil
}

// TaskPage is one page of a listing.
type TaskPage struct {
	// Tasks are newest first: by the time each entered its current state
	// (TaskSummary.ChangedAt), then by id.
	Tasks []TaskSummary `json:"tasks"`
	// Next is the cursor of the next page (ListOptions.Cursor), "" after
	// the last. It stays valid while tasks come and go: a page never
	// repeats a task of an earlier page that has not changed state since,
	// and skips none.
	Next string `json:"next_cursor,omitempty"`
}

// TaskLister is implemented by a Backend that lists and counts its tasks
// itself, from index structures, at a cost per call that does not grow
// with the number of tasks it holds: the Redis backend does. The Memory
// backend does not; an Inspector lists its tasks by reading them all.
type TaskLister interface {
	// ListTasks lists the tasks that o selects (o is valid, its limit
	// set) newest first, as TaskPage says. A cursor it did not issue
	// gives an error wrapping ErrInvalidQuery. A filter it has no index
	// for (the owner) it applies to a bounded number of tasks per page,
	// so that the page may hold fewer than o.Limit with a Next.
	ListTasks(ctx context.Context, o ListOptions) (TaskPage, error)
	// TaskStats counts the tasks: every field of Stats but the depth
	// (Ready, Delayed, Running: see DepthReader) and Workers.
	TaskStats(ctx context.Context) (Stats, error)
}

// History is a store of finished tasks that keeps them past the
// backend's retention (a database). An Inspector whose
// InspectorConfig.History is set lists its tasks with the backend's, in
// one order, so that a listing pages from the newest task in the queue
// back to the oldest on record: a task the backend has forgotten comes
// from the History at its place, and one that both hold comes once.
type History interface {
	// ListHistory lists the finished tasks that q selects in the order
	// of a listing (TaskPage): newest first by EndedAt to the
	// millisecond, then by id, greatest first, byte by byte (as Go
	// compares strings: "b" > "a_1" > "B" > "A-1"; a database compares
	// so under a collation such as PostgreSQL's "C", not under a
	// linguistic one such as en_US.UTF-8); those after q.After when it
	// is set. A page holds at most q.Limit tasks, and its Next is not
	// empty when more follow its last one.
	ListHistory(ctx context.Context, q HistoryQuery) (TaskPage, error)
}

// HistoryQuery selects finished tasks from a History.
type HistoryQuery struct {
	// State is SUCCESS, FAILURE or "" for both; Flow is a flow's name or
	// "" for all; Owner is an owner (Task.Owner, exactly) or "" for all.
	State progress.State
	Flow  string
	Owner string
	// Since and Until keep the tasks that ended in [Since, Until): Since
	// inclusive, Until exclusive, both to the millisecond, as
	// ListOptions.Match keeps them; a zero time leaves that end open.
	// Until before Since is an invalid query.
	Since, Until time.Time
	// After, when not nil, lists the tasks that come after that position
	// in the order of a listing (Cursor.Precedes): the Inspector pages
	// through the History by the positions of the tasks it listed last,
	// as it does through the backend. Nil starts with the newest task.
	After *Cursor
	// Before bounds the listing: only tasks that ended before it; zero
	// leaves it open. The Inspector does not set it.
	Before time.Time
	// Limit is the most tasks of the page (1 to MaxListLimit); Cursor is
	// the Next of the previous page of the History, "" for the first.
	// The Inspector pages with After and does not set Cursor.
	Limit  int
	Cursor string
}
