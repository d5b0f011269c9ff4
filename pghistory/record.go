package pghistory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Record is one finished task as the history keeps it.
type Record struct {
	// TaskID is the task's id.
	TaskID string `json:"task_id"`
	// Flow is the name of its flow.
	Flow string `json:"flow"`
	// State is SUCCESS or FAILURE.
	State progress.State `json:"state"`
	// Status is the final status line: the reason of a FAILURE.
	Status string `json:"status"`
	// Owner is the label of whoever started the task, "" if none.
	Owner string `json:"owner,omitempty"`
	// Inputs are the task's inputs, a JSON object.
	Inputs json.RawMessage `json:"inputs"`
	// Snapshot is the task's final snapshot: its step results and its
	// final result.
	Snapshot progress.Snapshot `json:"snapshot"`
	// Attempts is the number of runs of its flow the task was given,
	// runs cut short by a worker's death and hand-backs included: its
	// leases, less those that only ran its finish hooks again
	// (queue.ErrRetryHooks), and less those that ended the task without
	// running the flow (cancelled while pending, say), as
	// queue.Task.Attempts, and so every live view of the task, counts
	// them (the worker tells its backend of such a lease,
	// queue.Lease.NoRun).
	Attempts int `json:"attempts"`
	// MaxAttempts is the number of runs it could have been given that
	// count: each hand-back gave it one run more (see HandBacks).
	MaxAttempts int `json:"max_attempts"`
	// HandBacks counts its runs handed back through no fault of its flow
	// (queue.Task.HandBacks: the store was down, the worker shut down),
	// which spent none of MaxAttempts: of its Attempts runs, Attempts -
	// HandBacks counted, so Attempts may pass MaxAttempts. Rows written
	// before the column existed read 0.
	HandBacks int `json:"hand_backs,omitempty"`
	// RequeuedFrom is the id of the dead task it was re-queued from, if
	// any.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	// Resume is set when it resumed that dead task (queue.Task.Resume):
	// its flow replayed the steps the dead task completed. Rows written
	// before the column existed read false.
	Resume bool `json:"resume,omitempty"`
	// Worker is the name of the worker that recorded its end.
	Worker string `json:"worker,omitempty"`
	// TraceID is the OpenTelemetry trace of the task (hex), if it was
	// traced.
	TraceID string `json:"trace_id,omitempty"`
	// EnqueuedAt is when the task was accepted; zero if unknown.
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	// StartedAt is when the run that ended it started; zero when no run
	// did (cancelled while pending, say) or it is unknown.
	StartedAt time.Time `json:"started_at,omitzero"`
	// EndedAt is when it ended. The history is ordered by it, then by
	// TaskID, in the order of a listing, which keeps times to the
	// millisecond as the Redis backend does: Save keeps EnqueuedAt,
	// StartedAt and EndedAt to the millisecond (rows written before
	// migration 004 had microseconds, which it cut).
	EndedAt time.Time `json:"ended_at"`
	// RecordedAt is when the row was written; set by Save.
	RecordedAt time.Time `json:"recorded_at"`
}

// Save writes r, its times to the millisecond (see Record.EndedAt),
// unless the history holds a row of r.TaskID already: then
// it does nothing and returns nil, so a task written again (finish hooks
// run at least once) keeps one row, the first. It returns an error
// wrapping ErrInvalidRecord for a record without a valid task id, a flow,
// a terminal state or an end time, or with inputs that are not JSON; and
// one wrapping queue.ErrUnavailable when the database cannot be reached.
// What PostgreSQL cannot store, in text or in JSON (the NUL character,
// bytes that are not UTF-8), it writes as U+FFFD, so that such a task has
// its row all the same.
func (s *Store) Save(ctx context.Context, r Record) error {
	switch {
	case !queue.ValidID(r.TaskID):
		return fmt.Errorf("%w: task id %q", ErrInvalidRecord, r.TaskID)
	case r.Flow == "":
		return fmt.Errorf("%w: task %s has no flow", ErrInvalidRecord, r.TaskID)
	case !r.State.Terminal():
		return fmt.Errorf("%w: task %s is %q, not SUCCESS or FAILURE", ErrInvalidRecord, r.TaskID, r.State)
	case r.EndedAt.IsZero():
		return fmt.Errorf("%w: task %s has no end time", ErrInvalidRecord, r.TaskID)
	}
	inputs := r.Inputs
	if len(inputs) == 0 {
		inputs = json.RawMessage("{}")
	}
	if !json.Valid(inputs) {
		return fmt.Errorf("%w: task %s: inputs are not JSON", ErrInvalidRecord, r.TaskID)
	}
	snap, err := json.Marshal(r.Snapshot)
	if err != nil {
		return fmt.Errorf("%w: task %s: snapshot: %w", ErrInvalidRecord, r.TaskID, err)
	}
	if inputs, err = pgJSON(inputs); err != nil {
		return fmt.Errorf("%w: task %s: inputs: %w", ErrInvalidRecord, r.TaskID, err)
	}
	if snap, err = pgJSON(snap); err != nil {
		return fmt.Errorf("%w: task %s: snapshot: %w", ErrInvalidRecord, r.TaskID, err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO flows_task_history
		(task_id, flow, state, status, owner, inputs, snapshot, attempts, max_attempts, hand_backs,
		 requeued_from, resume, worker, trace_id, enqueued_at, started_at, ended_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		ON CONFLICT (task_id) DO NOTHING`,
		r.TaskID, pgText(r.Flow), string(r.State), pgText(r.Status), pgText(r.Owner), string(inputs), string(snap), r.Attempts, r.MaxAttempts,
		r.HandBacks, pgText(r.RequeuedFrom), r.Resume, pgText(r.Worker), pgText(r.TraceID), nullTime(r.EnqueuedAt), nullTime(r.StartedAt), milli(r.EndedAt))
	if err != nil {
		return s.wrap("save task "+r.TaskID, err)
	}
	return nil
}

// nullTime is nil for the zero time, else t to the millisecond.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return milli(t)
}

// columns are the columns a Record is read from, in scanRecord's order.
const columns = `task_id, flow, state, status, owner, inputs, snapshot, attempts, max_attempts,
	hand_backs, requeued_from, resume, worker, trace_id, enqueued_at, started_at, ended_at, recorded_at`

// scanRecord reads a row of columns.
func scanRecord(row pgx.CollectableRow) (Record, error) {
	var (
		r                   Record
		state               string
		inputs, snap        []byte
		enqueued, startedAt *time.Time
	)
	err := row.Scan(&r.TaskID, &r.Flow, &state, &r.Status, &r.Owner, &inputs, &snap, &r.Attempts, &r.MaxAttempts,
		&r.HandBacks, &r.RequeuedFrom, &r.Resume, &r.Worker, &r.TraceID, &enqueued, &startedAt, &r.EndedAt, &r.RecordedAt)
	if err != nil {
		return r, err
	}
	r.State = progress.State(state)
	r.Inputs = json.RawMessage(inputs)
	if err := json.Unmarshal(snap, &r.Snapshot); err != nil {
		return r, fmt.Errorf("task %s: snapshot: %w", r.TaskID, err)
	}
	if enqueued != nil {
		r.EnqueuedAt = enqueued.UTC()
	}
	if startedAt != nil {
		r.StartedAt = startedAt.UTC()
	}
	r.EndedAt, r.RecordedAt = r.EndedAt.UTC(), r.RecordedAt.UTC()
	return r, nil
}

// Get returns the history's row of task id, or an error wrapping
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	if !queue.ValidID(id) {
		return Record{}, fmt.Errorf("%w: %w", ErrNotFound, queue.ErrInvalidID)
	}
	rows, err := s.pool.Query(ctx, "SELECT "+columns+" FROM flows_task_history WHERE task_id = $1", id)
	if err != nil {
		return Record{}, s.wrap("get task "+id, err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRecord)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Record{}, s.wrap("get task "+id, err)
	}
	return r, nil
}
