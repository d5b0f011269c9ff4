package progress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// newReporter returns a TaskReporter for a new task in a new MemoryStore,
// logging to the returned buffer.
func newReporter(t *testing.T) (*progress.TaskReporter, *progress.MemoryStore, *bytes.Buffer) {
	t.Helper()
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, store.Create(context.Background(), "task-1"))
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	return progress.NewTaskReporter(store, "task-1", logger), store, &logs
}

func storedEvents(t *testing.T, s progress.Store, taskID string) []progress.Event {
	t.Helper()
	events, err := s.Events(context.Background(), taskID, "")
	require.NoError(t, err)
	for i := range events {
		assert.False(t, events[i].At.IsZero(), "event %d has no time", i)
		events[i].ID, events[i].At = "", time.Time{}
	}
	return events
}

func TestTaskReporterWritesEvents(t *testing.T) {
	ctx := context.Background()
	r, store, logs := newReporter(t)
	assert.Equal(t, "task-1", r.TaskID())

	require.NoError(t, r.Start(ctx, "Started"))
	r.Status("thinking")
	r.Progress(150, "almost")
	r.Progress(-3, "")
	r.Log("searched")
	r.ToolResult("research", "web_search", map[string]any{"hits": 2})
	r.ToolResult("research", "raw", json.RawMessage(`[1,2]`))
	r.Token("Hel")
	r.Token("")
	r.Token("lo")
	require.NoError(t, r.Succeed(ctx, map[string]string{"poem": "roses"}))

	want := []progress.Event{
		{Type: progress.EventState, State: progress.StateProgress, Status: "Started"},
		{Type: progress.EventStatus, Status: "thinking"},
		{Type: progress.EventProgress, Progress: 100, Status: "almost"},
		{Type: progress.EventProgress, Progress: 0},
		{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepLog, Message: "searched"}},
		{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepToolResult, StepName: "research", Tool: "web_search", Data: json.RawMessage(`{"hits":2}`)}},
		{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepToolResult, StepName: "research", Tool: "raw", Data: json.RawMessage(`[1,2]`)}},
		{Type: progress.EventToken, Token: "Hel"},
		{Type: progress.EventToken, Token: "lo"},
		{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(`{"poem":"roses"}`)},
	}
	assert.Equal(t, want, storedEvents(t, store, "task-1"))

	snap, _, err := store.Snapshot(ctx, "task-1")
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Equal(t, 100, snap.Details.Progress)
	assert.JSONEq(t, `{"poem":"roses"}`, string(snap.Details.FinalResult))
	assert.Len(t, snap.Details.StepResults, 3)
	assert.Empty(t, logs.String(), "nothing went wrong, nothing logged")
}

func TestTaskReporterAfterTerminal(t *testing.T) {
	tests := []struct {
		name   string
		finish func(r *progress.TaskReporter) error
		state  progress.State
	}{
		{"after success", func(r *progress.TaskReporter) error { return r.Succeed(context.Background(), "ok") }, progress.StateSuccess},
		{"after failure", func(r *progress.TaskReporter) error { return r.Fail(context.Background(), "cancelled") }, progress.StateFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r, store, logs := newReporter(t)
			require.NoError(t, tt.finish(r))
			before := storedEvents(t, store, "task-1")

			// A flow still reporting after its task ended (a cancelled flow
			// that ignores its context) is silently ignored.
			r.Status("late")
			r.Progress(50, "late")
			r.Log("late")
			r.ToolResult("s", "t", 1)
			r.Token("late")
			assert.Empty(t, logs.String(), "ErrFinished is expected after the end, not logged")

			// The worker's own transitions say that the task had ended.
			assert.ErrorIs(t, r.Start(ctx, "again"), progress.ErrFinished)
			assert.ErrorIs(t, r.Succeed(ctx, "again"), progress.ErrFinished)
			assert.ErrorIs(t, r.Fail(ctx, "again"), progress.ErrFinished)

			assert.Equal(t, before, storedEvents(t, store, "task-1"), "nothing recorded after the terminal state")
			snap, _, err := store.Snapshot(ctx, "task-1")
			require.NoError(t, err)
			assert.Equal(t, tt.state, snap.State)
		})
	}
}

func TestTaskReporterFailureReason(t *testing.T) {
	ctx := context.Background()
	r, store, _ := newReporter(t)
	r.Progress(40, "writing")
	require.NoError(t, r.Fail(ctx, "model unavailable"))
	snap, _, err := store.Snapshot(ctx, "task-1")
	require.NoError(t, err)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "model unavailable", snap.Details.Status)
	assert.Equal(t, 40, snap.Details.Progress)
	assert.Nil(t, snap.Details.FinalResult)
}

func TestTaskReporterLogsOtherErrors(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	var logs bytes.Buffer
	r := progress.NewTaskReporter(store, "missing", slog.New(slog.NewTextHandler(&logs, nil)))

	r.Log("into the void")
	require.NoError(t, r.Flush(context.Background()))
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "task_id=missing")
	assert.Contains(t, logs.String(), "task not found")

	assert.ErrorIs(t, r.Succeed(context.Background(), "x"), progress.ErrNotFound)
}

func TestTaskReporterNilLogger(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, store.Create(context.Background(), "t"))
	r := progress.NewTaskReporter(store, "t", nil)
	r.Log("works without a logger")
	require.NoError(t, r.Flush(context.Background()))
	assert.Len(t, storedEvents(t, store, "t"), 1)
}

func TestEncodeData(t *testing.T) {
	tests := []struct {
		name string
		data any
		want string
	}{
		{"raw message kept", json.RawMessage(`{"a": 1}`), `{"a": 1}`},
		{"invalid raw message becomes a string", json.RawMessage(`{oops`), `"{oops"`},
		{"bytes of JSON kept", []byte(`[1,2]`), `[1,2]`},
		{"other bytes become a string", []byte(`plain text`), `"plain text"`},
		{"string", "hi", `"hi"`},
		{"nil", nil, `null`},
		{"struct", struct {
			N int `json:"n"`
		}{3}, `{"n":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, string(progress.EncodeData(tt.data)))
		})
	}

	t.Run("unencodable value becomes an error string", func(t *testing.T) {
		got := progress.EncodeData(math.Inf(1))
		var s string
		require.NoError(t, json.Unmarshal(got, &s), "still valid JSON: %s", got)
		assert.Contains(t, s, "unencodable tool output")
	})
}
