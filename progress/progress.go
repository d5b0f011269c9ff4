// Package progress defines what a running flow reports and how those reports
// are stored and delivered: the [Reporter] a flow calls, the [Event] log of
// a task, the [Snapshot] the HTTP clients render, and the [Store] and
// [Subscriber] interfaces with an in-memory implementation
// ([MemoryStore]). A [Recorder] stands in for the store in a flow's unit
// tests. A [CheckpointStore] keeps the outputs of a task's completed
// steps, which later attempts replay (see flow.Step).
//
// A task's history is an append-only sequence of events. Each event has an
// id that grows monotonically within the task; the snapshot of a task is the
// fold of its events (see [Snapshot.Apply]). Because the whole log is kept
// while the task's retention lasts, a subscriber can start after any id and
// rebuild exactly what it missed.
package progress

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// State is the life-cycle state of a task, spelled as the original platform
// spelled it on the wire.
type State string

// The four states of a task. A task starts PENDING, moves to PROGRESS when a
// worker starts it, and ends in exactly one of SUCCESS or FAILURE.
const (
	StatePending  State = "PENDING"
	StateProgress State = "PROGRESS"
	StateSuccess  State = "SUCCESS"
	StateFailure  State = "FAILURE"
)

// Terminal reports whether s is SUCCESS or FAILURE.
func (s State) Terminal() bool { return s == StateSuccess || s == StateFailure }

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateProgress, StateSuccess, StateFailure:
		return true
	}
	return false
}

// Step types carried in Details.StepResults.
const (
	StepLog        = "log"
	StepToolResult = "tool_result"
)

// StepResult is one entry of a task's step_results: a log line or the
// result of a tool call.
type StepResult struct {
	// Type is StepLog or StepToolResult.
	Type string `json:"type"`
	// Message is the text of a log entry.
	Message string `json:"message,omitempty"`
	// StepName names the step that called the tool (tool results only).
	StepName string `json:"step_name,omitempty"`
	// Tool names the tool (tool results only).
	Tool string `json:"tool,omitempty"`
	// Data is the tool's output as JSON (tool results only).
	Data json.RawMessage `json:"data,omitempty"`
	// At is when the step was recorded: the At of the event that carried
	// it (see Event.At); zero when the store did not record it.
	At time.Time `json:"at,omitzero"`
}

// Details is the "details" object of a snapshot.
type Details struct {
	// Status is a human-readable line about what the task is doing; on
	// FAILURE it carries the reason.
	Status string `json:"status"`
	// Progress is a percentage from 0 to 100.
	Progress int `json:"progress"`
	// StepResults lists log entries and tool results in the order reported.
	StepResults []StepResult `json:"step_results"`
	// FinalResult is the flow's result as JSON, null until SUCCESS.
	FinalResult json.RawMessage `json:"final_result"`
}

// MarshalJSON encodes d with step_results as an array even when
// StepResults is nil, since clients iterate over it without checking.
func (d Details) MarshalJSON() ([]byte, error) {
	type plain Details // without this method
	p := plain(d)
	if p.StepResults == nil {
		p.StepResults = []StepResult{}
	}
	return json.Marshal(p)
}

// Snapshot is the full state of a task as the HTTP clients see it: the JSON
// of every default SSE message and of GET /tasks/{id}/.
type Snapshot struct {
	State   State   `json:"state"`
	Details Details `json:"details"`
	// UpdatedAt is when the last event folded into the snapshot was
	// recorded (its Event.At); zero before the first event.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// StartedAt is when the task's current run started: the At of its
	// latest state event to PROGRESS, or of the event that moved it from
	// PENDING. Zero for a task that never ran.
	StartedAt time.Time `json:"started_at,omitzero"`
	// EndedAt is when the task reached SUCCESS or FAILURE; zero before.
	EndedAt time.Time `json:"ended_at,omitzero"`
}

// NewSnapshot returns the snapshot of a task that was just accepted.
func NewSnapshot() Snapshot {
	return Snapshot{
		State:   StatePending,
		Details: Details{Status: "Queued", StepResults: []StepResult{}},
	}
}

// Clone returns a deep copy of s that shares no slices with it.
func (s Snapshot) Clone() Snapshot {
	c := s
	c.Details.StepResults = append(make([]StepResult, 0, len(s.Details.StepResults)), s.Details.StepResults...)
	for i := range c.Details.StepResults {
		if d := c.Details.StepResults[i].Data; d != nil {
			c.Details.StepResults[i].Data = append(json.RawMessage(nil), d...)
		}
	}
	if s.Details.FinalResult != nil {
		c.Details.FinalResult = append(json.RawMessage(nil), s.Details.FinalResult...)
	}
	return c
}

// EventType says what an Event changes.
type EventType string

// The event types. Every type but EventToken changes the snapshot.
const (
	// EventState moves the task to State. With StateSuccess it carries
	// Result; with StateFailure, Status holds the reason. Status, when
	// non-empty, also replaces the status line for the other states.
	EventState EventType = "state"
	// EventStatus replaces the status line with Status.
	EventStatus EventType = "status"
	// EventProgress sets the percentage to Progress, and the status line
	// to Status when Status is non-empty.
	EventProgress EventType = "progress"
	// EventStep appends Step to the step results.
	EventStep EventType = "step"
	// EventToken carries a chunk of text written by a language model. It
	// does not change the snapshot: the final result carries the whole text.
	EventToken EventType = "token"
)

// Event is one entry in a task's append-only log.
type Event struct {
	// ID is assigned by the Store on Append; ids of one task grow
	// monotonically. Its form belongs to the Store (see Store.Append).
	ID string `json:"id,omitempty"`
	// Type says which of the fields below matter.
	Type EventType `json:"type"`
	// State is the new state (EventState).
	State State `json:"state,omitempty"`
	// Status is a status line (EventState, EventStatus, EventProgress).
	Status string `json:"status,omitempty"`
	// Progress is a percentage (EventProgress).
	Progress int `json:"progress,omitempty"`
	// Step is the step result to append (EventStep).
	Step *StepResult `json:"step,omitempty"`
	// Token is a chunk of model output (EventToken).
	Token string `json:"token,omitempty"`
	// Result is the final result as JSON (EventState with StateSuccess).
	Result json.RawMessage `json:"result,omitempty"`
	// At is when the event was recorded, assigned by the Store on Append
	// as ID is (by its own clock: the Redis backend's is the Redis
	// server's); zero when the store did not record it.
	At time.Time `json:"at,omitzero"`
}

// Terminal reports whether e moves its task to SUCCESS or FAILURE.
func (e Event) Terminal() bool { return e.Type == EventState && e.State.Terminal() }

// Size returns the number of bytes of text and JSON e carries: the
// lengths of its Status, Token and Result, and of its Step's Message,
// StepName, Tool and Data. It is what a TaskReporter's limit on one
// report goes by (see TaskReporter.SetMaxReportBytes). The event's type,
// state, percentage, id and time are not counted, nor the escaping of
// its text in JSON, where a quote or a line break takes two bytes and a
// control character six.
func (e Event) Size() int {
	n := len(e.Status) + len(e.Token) + len(e.Result)
	if st := e.Step; st != nil {
		n += len(st.Message) + len(st.StepName) + len(st.Tool) + len(st.Data)
	}
	return n
}

// ErrInvalidEvent is returned (wrapped) for an event that cannot be applied.
var ErrInvalidEvent = errors.New("progress: invalid event")

// Validate checks that e is well formed: a known type with the fields that
// type needs, and valid JSON wherever it carries JSON.
func (e Event) Validate() error {
	switch e.Type {
	case EventState:
		if !e.State.Valid() {
			return fmt.Errorf("%w: unknown state %q", ErrInvalidEvent, e.State)
		}
		if len(e.Result) > 0 && !json.Valid(e.Result) {
			return fmt.Errorf("%w: result is not valid JSON", ErrInvalidEvent)
		}
	case EventStatus, EventToken:
	case EventProgress:
		if e.Progress < 0 || e.Progress > 100 {
			return fmt.Errorf("%w: progress %d out of range 0-100", ErrInvalidEvent, e.Progress)
		}
	case EventStep:
		if e.Step == nil {
			return fmt.Errorf("%w: step event without a step", ErrInvalidEvent)
		}
		if len(e.Step.Data) > 0 && !json.Valid(e.Step.Data) {
			return fmt.Errorf("%w: step data is not valid JSON", ErrInvalidEvent)
		}
	default:
		return fmt.Errorf("%w: unknown event type %q", ErrInvalidEvent, e.Type)
	}
	return nil
}

// Apply folds e into s and reports whether s changed. Applying a task's
// events in order to NewSnapshot() gives its current snapshot. Events after
// a terminal state change nothing; a Store refuses them anyway. The times
// of the snapshot (UpdatedAt, StartedAt, EndedAt) and of a step result
// come from e.At.
func (s *Snapshot) Apply(e Event) bool {
	if s.State.Terminal() {
		return false
	}
	was := s.State
	switch e.Type {
	case EventState:
		s.State = e.State
		if e.State == StateProgress {
			s.StartedAt = e.At
		}
		if e.Status != "" {
			s.Details.Status = e.Status
		}
		if e.State == StateSuccess {
			s.Details.Progress = 100
			s.Details.FinalResult = e.Result
		}
	case EventStatus:
		s.Details.Status = e.Status
	case EventProgress:
		s.Details.Progress = min(max(e.Progress, 0), 100)
		if e.Status != "" {
			s.Details.Status = e.Status
		}
	case EventStep:
		if e.Step != nil {
			step := *e.Step
			step.At = e.At
			s.Details.StepResults = append(s.Details.StepResults, step)
		}
	default:
		return false
	}
	if s.State == StatePending && e.Type != EventState {
		s.State = StateProgress
	}
	if was == StatePending && s.State == StateProgress {
		s.StartedAt = e.At
	}
	if s.State.Terminal() {
		s.EndedAt = e.At
	}
	s.UpdatedAt = e.At
	return true
}
