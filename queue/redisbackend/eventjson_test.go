package redisbackend

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// eventCases covers every field of an event and of a step, empty and set,
// with strings that need escaping and JSON that needs compacting.
var eventCases = []progress.Event{
	{Type: progress.EventState, State: progress.StateProgress, Status: "Running"},
	{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(` { "poem" : "roses <are> red & \u2028" } `)},
	{Type: progress.EventState, State: progress.StateFailure, Status: "model \"unavailable\"\n"},
	{Type: progress.EventStatus, Status: "héllo <b>"},
	{Type: progress.EventProgress, Progress: 42},
	{Type: progress.EventProgress, Progress: 0, Status: "zero is omitted"},
	{Type: progress.EventToken, Token: "\x00\x1f tok\xff"},
	progress.LogEvent("a log line"),
	progress.ToolResultEvent("search", "web", json.RawMessage(`[1, 2, {"a" : null}]`)),
	{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepToolResult}},
	{ID: "1-1", Type: progress.EventStatus, Status: "the id is left out"},
	{Type: progress.EventStatus, Status: "timed", At: time.UnixMilli(1796400000123).UTC()},
	{Type: progress.EventStatus, Status: "timed, ns, not UTC", At: time.Date(2026, 12, 4, 17, 0, 0, 120, time.FixedZone("X", -7200))},
	{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepLog, Message: "m", At: time.UnixMilli(1796400000100).UTC()}, At: time.UnixMilli(1796400000100).UTC()},
}

func TestEventJSONMatchesMarshal(t *testing.T) {
	t.Parallel()
	for _, e := range eventCases {
		var step []byte
		if e.Step != nil {
			want, err := json.Marshal(e.Step)
			require.NoError(t, err)
			step, err = appendStepJSON(nil, e.Step)
			require.NoError(t, err)
			assert.Equal(t, string(want), string(step))
		}
		noID := e
		noID.ID = ""
		want, err := json.Marshal(noID)
		require.NoError(t, err)
		got, err := appendEventJSON(nil, e, step)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got))
	}
}

func TestEventJSONRefusesInvalidRaw(t *testing.T) {
	t.Parallel()
	_, err := appendEventJSON(nil, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`{oops`)}, nil)
	assert.Error(t, err)
	_, err = appendStepJSON(nil, &progress.StepResult{Type: progress.StepToolResult, Data: json.RawMessage(`[`)})
	assert.Error(t, err)
}

func FuzzEventJSON(f *testing.F) {
	f.Add("status", "msg", "tool", "tok", 7, `{"a":1}`)
	f.Fuzz(func(t *testing.T, status, msg, tool, token string, pct int, raw string) {
		e := progress.Event{Type: progress.EventStep, Status: status, Progress: pct, Token: token,
			Step: &progress.StepResult{Type: progress.StepToolResult, Message: msg, Tool: tool}}
		if json.Valid([]byte(raw)) {
			e.Step.Data = json.RawMessage(raw)
			e.Result = json.RawMessage(raw)
		}
		step, err := appendStepJSON(nil, e.Step)
		require.NoError(t, err)
		got, err := appendEventJSON(nil, e, step)
		require.NoError(t, err)
		want, err := json.Marshal(e)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got))
	})
}
