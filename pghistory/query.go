package pghistory

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Limits of a page of List.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Query selects finished tasks for List. Zero fields select everything.
type Query struct {
	// Flow keeps the tasks of this flow.
	Flow string
	// State keeps the tasks that ended so: progress.StateSuccess or
	// progress.StateFailure.
	State progress.State
	// Owner keeps the tasks of this owner label. A flow or an owner is
	// looked for as Save writes it: a NUL, or bytes that are not UTF-8,
	// as U+FFFD.
	Owner string
	// Since keeps the tasks that ended at or after it.
	Since time.Time
	// Until keeps the tasks that ended before it.
	Until time.Time
	// Limit is the most tasks of a page: DefaultLimit when zero, at most
	// MaxLimit.
	Limit int
	// Cursor continues a listing after the last task of a page: the
	// Page.Next of the page before, with the same filters. Empty starts
	// with the newest task.
	Cursor string
}

// Page is a page of List.
type Page struct {
	// Records are the tasks of the page, newest first: by the time they
	// ended, then by id, descending, byte by byte (COLLATE "C", whatever
	// the database's collation), as a queue listing orders them.
	Records []Record
	// Next is the Cursor of the next page, "" when this is the last.
	Next string
}

// List returns a page of the finished tasks that q selects, newest first.
// A page costs one indexed query, however long the history: the cursor
// names the last task of the page before (its end time and id), not an
// offset. Tasks written while a listing goes on appear in it only if they
// sort after the cursor. It returns an error wrapping ErrBadCursor for a
// cursor List did not make, an error for a State that is not terminal or
// a Limit out of range, and one wrapping queue.ErrUnavailable when the
// database cannot be reached.
func (s *Store) List(ctx context.Context, q Query) (Page, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return Page{}, fmt.Errorf("pghistory: limit %d out of range 1..%d", q.Limit, MaxLimit)
	}
	if q.State != "" && !q.State.Terminal() {
		return Page{}, fmt.Errorf("pghistory: state %q: the history holds SUCCESS and FAILURE only", q.State)
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, v ...any) {
		for range v {
			args = append(args, v[0])
			v = v[1:]
			cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		where = append(where, cond)
	}
	if q.Flow != "" {
		add("flow = ?", pgText(q.Flow))
	}
	if q.State != "" {
		add("state = ?", string(q.State))
	}
	if q.Owner != "" {
		add("owner = ?", pgText(q.Owner))
	}
	if !q.Since.IsZero() {
		add("ended_at >= ?", q.Since)
	}
	if !q.Until.IsZero() {
		add("ended_at < ?", q.Until)
	}
	if q.Cursor != "" {
		at, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return Page{}, err
		}
		add(`(ended_at, task_id COLLATE "C") < (?, ?)`, at, id)
	}
	sql := "SELECT " + columns + " FROM flows_task_history"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit+1)
	// Ids in byte order (COLLATE "C"), as Go compares them and as the
	// indexes hold them since migration 005, whatever the database's
	// collation: a listing merges these rows with the backend's tasks.
	sql += ` ORDER BY ended_at DESC, task_id COLLATE "C" DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Page{}, s.wrap("list", err)
	}
	records, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return Page{}, s.wrap("list", err)
	}
	var p Page
	if len(records) > limit {
		records = records[:limit]
		last := records[limit-1]
		p.Next = encodeCursor(last.EndedAt, last.TaskID)
	}
	p.Records = records
	return p, nil
}

// A cursor is the end time (Unix microseconds, PostgreSQL's precision;
// Save keeps end times to the millisecond, rows of earlier versions may
// have more) and id of the last task of a page, as "<micros>.<id>" in
// base64url.
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrBadCursor, c)
	}
	micros, id, ok := strings.Cut(string(b), ".")
	us, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil || !queue.ValidID(id) {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrBadCursor, c)
	}
	return time.UnixMicro(us).UTC(), id, nil
}

var _ queue.History = (*Store)(nil)

// ListHistory implements queue.History, so that a queue.Inspector whose
// InspectorConfig.History is this Store lists the history with the
// backend's tasks, past the backend's retention: the tasks after q.After
// (by their end time, which Save keeps to the millisecond, then by id:
// the order of a listing) and, when set, that ended before q.Before,
// newest first, as List pages them, of q's owner and in q's time range
// (Query.Owner; Since and Until to the millisecond, as a listing's) when
// set. Its errors for a bad limit, state, time range or cursor, or both
// q.After and q.Cursor, wrap queue.ErrInvalidQuery.
func (s *Store) ListHistory(ctx context.Context, q queue.HistoryQuery) (queue.TaskPage, error) {
	if q.Limit < 1 || q.Limit > MaxLimit {
		return queue.TaskPage{}, fmt.Errorf("%w: limit %d out of range 1-%d", queue.ErrInvalidQuery, q.Limit, MaxLimit)
	}
	if q.State != "" && !q.State.Terminal() {
		return queue.TaskPage{}, fmt.Errorf("%w: the history holds SUCCESS and FAILURE only, not %q", queue.ErrInvalidQuery, q.State)
	}
	since, until := milli(q.Since), milli(q.Until)
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return queue.TaskPage{}, fmt.Errorf("%w: until %s is before since %s", queue.ErrInvalidQuery,
			q.Until.UTC().Format(time.RFC3339Nano), q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Before.IsZero() && (until.IsZero() || q.Before.Before(until)) {
		until = q.Before
	}
	cursor := q.Cursor
	if q.After != nil {
		if cursor != "" {
			return queue.TaskPage{}, fmt.Errorf("%w: a history query with both a position (After) and a cursor", queue.ErrInvalidQuery)
		}
		if !queue.ValidID(q.After.ID) {
			return queue.TaskPage{}, fmt.Errorf("%w: position after task id %q", queue.ErrInvalidQuery, q.After.ID)
		}
		cursor = encodeCursor(milli(q.After.At), q.After.ID)
	}
	page, err := s.List(ctx, Query{Flow: q.Flow, State: q.State, Owner: q.Owner, Since: since, Until: until, Limit: q.Limit, Cursor: cursor})
	if errors.Is(err, ErrBadCursor) {
		return queue.TaskPage{}, fmt.Errorf("%w: %w", queue.ErrInvalidQuery, err)
	}
	if err != nil {
		return queue.TaskPage{}, err
	}
	out := queue.TaskPage{Tasks: make([]queue.TaskSummary, len(page.Records)), Next: page.Next}
	for i, r := range page.Records {
		out.Tasks[i] = r.Summary()
	}
	return out, nil
}

// Summary returns the task as a queue listing shows it.
func (r Record) Summary() queue.TaskSummary {
	return queue.TaskSummary{
		ID: r.TaskID, Flow: r.Flow, State: r.State, Progress: r.Snapshot.Details.Progress, Status: r.Status,
		Attempt: r.Attempts, MaxAttempts: r.MaxAttempts, HandBacks: r.HandBacks, Owner: r.Owner, RequeuedFrom: r.RequeuedFrom,
		Resume:     r.Resume,
		Cancelled:  r.State == progress.StateFailure && r.Status == queue.StatusCancelled,
		EnqueuedAt: r.EnqueuedAt, StartedAt: r.StartedAt, EndedAt: r.EndedAt,
	}
}

// milli is t to the millisecond, the precision of a listing's order; the
// zero time stays zero.
func milli(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
