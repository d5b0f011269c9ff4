package progress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Reporter is what a running flow calls to report its progress. Every
// method is safe for concurrent use and never blocks the flow for long:
// reporting is best effort for the flow, and a failure to record an event is
// logged by the implementation rather than returned.
type Reporter interface {
	// Status replaces the task's status line.
	Status(msg string)
	// Progress sets the percentage (clamped to 0-100) and, when msg is not
	// empty, the status line.
	Progress(percent int, msg string)
	// Log appends a "log" entry to the step results.
	Log(msg string)
	// ToolResult appends a "tool_result" entry. data is encoded as JSON;
	// a json.RawMessage is kept as it is.
	ToolResult(step, tool string, data any)
	// Token reports a chunk of text written by a language model. Tokens
	// travel to SSE clients as named "token" events; they do not change the
	// snapshot.
	Token(text string)
}

// Discard is a Reporter that records nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Status(string)                  {}
func (discard) Progress(int, string)           {}
func (discard) Log(string)                     {}
func (discard) ToolResult(string, string, any) {}
func (discard) Token(string)                   {}

// EncodeData turns a tool's output into JSON for StepResult.Data: a
// json.RawMessage or []byte holding valid JSON is kept as it is, anything
// else is marshalled; a value that cannot be marshalled becomes a JSON string
// describing the error.
func EncodeData(data any) json.RawMessage {
	switch d := data.(type) {
	case json.RawMessage:
		if json.Valid(d) {
			return d
		}
		data = string(d)
	case []byte:
		if json.Valid(d) {
			return json.RawMessage(d)
		}
		data = string(d)
	}
	b, err := json.Marshal(data)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprintf("unencodable tool output: %v", err))
	}
	return b
}

// ToolResultEvent returns the EventStep that Reporter.ToolResult appends.
func ToolResultEvent(step, tool string, data any) Event {
	return Event{Type: EventStep, Step: &StepResult{Type: StepToolResult, StepName: step, Tool: tool, Data: EncodeData(data)}}
}

// LogEvent returns the EventStep that Reporter.Log appends.
func LogEvent(msg string) Event {
	return Event{Type: EventStep, Step: &StepResult{Type: StepLog, Message: msg}}
}

// TaskReporter is the Reporter of one task, writing to a Store. Workers
// create one per attempt; it also carries the terminal transitions that only
// the worker makes (Start, Succeed, Fail).
type TaskReporter struct {
	store   Store
	taskID  string
	logger  *slog.Logger
	timeout time.Duration
}

// NewTaskReporter returns a reporter writing task taskID's events to store.
// A nil logger means slog.Default().
func NewTaskReporter(store Store, taskID string, logger *slog.Logger) *TaskReporter {
	if logger == nil {
		logger = slog.Default()
	}
	return &TaskReporter{store: store, taskID: taskID, logger: logger, timeout: 10 * time.Second}
}

// TaskID returns the id of the task this reporter writes to.
func (r *TaskReporter) TaskID() string { return r.taskID }

func (r *TaskReporter) emit(events ...Event) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if _, err := r.store.Append(ctx, r.taskID, events...); err != nil && !errors.Is(err, ErrFinished) {
		r.logger.Warn("flows: progress event not recorded", "task_id", r.taskID, "type", events[0].Type, "err", err)
	}
}

// Status implements Reporter.
func (r *TaskReporter) Status(msg string) { r.emit(Event{Type: EventStatus, Status: msg}) }

// Progress implements Reporter.
func (r *TaskReporter) Progress(percent int, msg string) {
	r.emit(Event{Type: EventProgress, Progress: min(max(percent, 0), 100), Status: msg})
}

// Log implements Reporter.
func (r *TaskReporter) Log(msg string) { r.emit(LogEvent(msg)) }

// ToolResult implements Reporter.
func (r *TaskReporter) ToolResult(step, tool string, data any) {
	r.emit(ToolResultEvent(step, tool, data))
}

// Token implements Reporter.
func (r *TaskReporter) Token(text string) {
	if text != "" {
		r.emit(Event{Type: EventToken, Token: text})
	}
}

// Start moves the task to PROGRESS with the given status line.
func (r *TaskReporter) Start(ctx context.Context, status string) error {
	_, err := r.store.Append(ctx, r.taskID, Event{Type: EventState, State: StateProgress, Status: status})
	return err
}

// Succeed moves the task to SUCCESS with result (encoded as by EncodeData).
// It returns ErrFinished if the task had already ended.
func (r *TaskReporter) Succeed(ctx context.Context, result any) error {
	_, err := r.store.Append(ctx, r.taskID, Event{Type: EventState, State: StateSuccess, Status: "Completed", Result: EncodeData(result)})
	return err
}

// Fail moves the task to FAILURE with reason as its status line. It
// returns ErrFinished if the task had already ended.
func (r *TaskReporter) Fail(ctx context.Context, reason string) error {
	_, err := r.store.Append(ctx, r.taskID, Event{Type: EventState, State: StateFailure, Status: reason})
	return err
}
