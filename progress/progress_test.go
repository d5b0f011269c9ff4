package progress_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

func TestStatePredicates(t *testing.T) {
	tests := []struct {
		state    progress.State
		valid    bool
		terminal bool
	}{
		{progress.StatePending, true, false},
		{progress.StateProgress, true, false},
		{progress.StateSuccess, true, true},
		{progress.StateFailure, true, true},
		{"", false, false},
		{"success", false, false},
		{"REVOKED", false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.state), func(t *testing.T) {
			assert.Equal(t, tt.valid, tt.state.Valid(), "Valid")
			assert.Equal(t, tt.terminal, tt.state.Terminal(), "Terminal")
			e := progress.Event{Type: progress.EventState, State: tt.state}
			assert.Equal(t, tt.terminal, e.Terminal(), "Event.Terminal")
		})
	}
	assert.False(t, progress.Event{Type: progress.EventStatus, State: progress.StateSuccess}.Terminal(),
		"only state events are terminal")
}

// decodeObject unmarshals JSON into a generic map, failing the test on
// error.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSnapshotJSONShape(t *testing.T) {
	t.Run("new snapshot", func(t *testing.T) {
		b, err := json.Marshal(progress.NewSnapshot())
		require.NoError(t, err)
		assert.JSONEq(t, `{"state":"PENDING","details":{"status":"Queued","progress":0,"step_results":[],"final_result":null}}`, string(b))
	})

	t.Run("nil step results marshal as an empty array", func(t *testing.T) {
		b, err := json.Marshal(progress.Snapshot{State: progress.StateProgress})
		require.NoError(t, err)
		assert.JSONEq(t, `{"state":"PROGRESS","details":{"status":"","progress":0,"step_results":[],"final_result":null}}`, string(b))
	})

	t.Run("decodes what it encodes", func(t *testing.T) {
		s := progress.NewSnapshot()
		s.Apply(progress.ToolResultEvent("s", "t", map[string]int{"n": 1}))
		s.Apply(progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)})
		b, err := json.Marshal(s)
		require.NoError(t, err)
		var back progress.Snapshot
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, s, back)
	})

	t.Run("finished snapshot", func(t *testing.T) {
		s := progress.NewSnapshot()
		s.Apply(progress.Event{Type: progress.EventProgress, Progress: 50, Status: "half way"})
		s.Apply(progress.LogEvent("searching"))
		s.Apply(progress.ToolResultEvent("research", "web_search", map[string]any{"hits": []string{"a"}}))
		s.Apply(progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(`"the answer"`)})
		b, err := json.Marshal(s)
		require.NoError(t, err)

		top := decodeObject(t, b)
		assert.ElementsMatch(t, []string{"state", "details"}, keys(top))
		details := top["details"].(map[string]any)
		assert.ElementsMatch(t, []string{"status", "progress", "step_results", "final_result"}, keys(details))
		assert.JSONEq(t, `{"state":"SUCCESS","details":{
			"status":"Completed","progress":100,
			"step_results":[
				{"type":"log","message":"searching"},
				{"type":"tool_result","step_name":"research","tool":"web_search","data":{"hits":["a"]}}
			],
			"final_result":"the answer"}}`, string(b))
	})
}

func TestSnapshotApply(t *testing.T) {
	logStep := progress.StepResult{Type: progress.StepLog, Message: "m"}
	tests := []struct {
		name        string
		start       func(s *progress.Snapshot)
		event       progress.Event
		wantChanged bool
		want        func(s *progress.Snapshot)
	}{
		{
			name:        "status on a pending task",
			event:       progress.Event{Type: progress.EventStatus, Status: "working"},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Status = "working"
			},
		},
		{
			name:        "empty status clears the line",
			start:       func(s *progress.Snapshot) { s.State = progress.StateProgress },
			event:       progress.Event{Type: progress.EventStatus},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Status = ""
			},
		},
		{
			name:        "progress above 100 is clamped",
			event:       progress.Event{Type: progress.EventProgress, Progress: 250},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Progress = 100
			},
		},
		{
			name:        "progress below 0 is clamped",
			start:       func(s *progress.Snapshot) { s.Details.Progress = 40 },
			event:       progress.Event{Type: progress.EventProgress, Progress: -5, Status: "rewinding"},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Progress = 0
				s.Details.Status = "rewinding"
			},
		},
		{
			name:        "progress without status keeps the status",
			event:       progress.Event{Type: progress.EventProgress, Progress: 10},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Progress = 10
			},
		},
		{
			name:        "step is appended",
			start:       func(s *progress.Snapshot) { s.Details.StepResults = []progress.StepResult{logStep} },
			event:       progress.LogEvent("second"),
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.StepResults = []progress.StepResult{logStep, {Type: progress.StepLog, Message: "second"}}
			},
		},
		{
			name:  "token changes nothing",
			event: progress.Event{Type: progress.EventToken, Token: "hi"},
			want:  func(*progress.Snapshot) {},
		},
		{
			name:  "unknown type changes nothing",
			event: progress.Event{Type: "bogus", Status: "x"},
			want:  func(*progress.Snapshot) {},
		},
		{
			name:        "state PROGRESS without status keeps the status",
			event:       progress.Event{Type: progress.EventState, State: progress.StateProgress},
			wantChanged: true,
			want:        func(s *progress.Snapshot) { s.State = progress.StateProgress },
		},
		{
			name:        "success sets 100 and the final result",
			start:       func(s *progress.Snapshot) { s.Details.Progress = 30 },
			event:       progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(`{"a":1}`)},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateSuccess
				s.Details.Status = "Completed"
				s.Details.Progress = 100
				s.Details.FinalResult = json.RawMessage(`{"a":1}`)
			},
		},
		{
			name:        "failure keeps progress and sets the reason",
			start:       func(s *progress.Snapshot) { s.Details.Progress = 30 },
			event:       progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "timed out", Result: json.RawMessage(`"ignored"`)},
			wantChanged: true,
			want: func(s *progress.Snapshot) {
				s.State = progress.StateFailure
				s.Details.Status = "timed out"
				s.Details.Progress = 30
			},
		},
		{
			name:  "nothing changes after success",
			start: func(s *progress.Snapshot) { s.State = progress.StateSuccess },
			event: progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "late"},
			want:  func(s *progress.Snapshot) { s.State = progress.StateSuccess },
		},
		{
			name:  "nothing changes after failure",
			start: func(s *progress.Snapshot) { s.State = progress.StateFailure },
			event: progress.LogEvent("late"),
			want:  func(s *progress.Snapshot) { s.State = progress.StateFailure },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := progress.NewSnapshot()
			if tt.start != nil {
				tt.start(&s)
			}
			want := s.Clone()
			tt.want(&want)

			changed := s.Apply(tt.event)
			assert.Equal(t, tt.wantChanged, changed, "Apply's result")
			assert.Equal(t, want, s)
		})
	}
}

func TestSnapshotClone(t *testing.T) {
	s := progress.NewSnapshot()
	s.Apply(progress.ToolResultEvent("s", "t", json.RawMessage(`{"k":"v"}`)))
	s.Apply(progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"r"`)})
	c := s.Clone()
	require.Equal(t, s, c)

	c.Details.StepResults[0].Tool = "changed"
	c.Details.StepResults[0].Data[2] = 'X'
	c.Details.FinalResult[1] = 'X'
	c.Details.StepResults = append(c.Details.StepResults, progress.StepResult{Type: progress.StepLog})

	assert.Equal(t, "t", s.Details.StepResults[0].Tool)
	assert.JSONEq(t, `{"k":"v"}`, string(s.Details.StepResults[0].Data))
	assert.Equal(t, `"r"`, string(s.Details.FinalResult))
	assert.Len(t, s.Details.StepResults, 1)

	empty := progress.Snapshot{}.Clone()
	assert.NotNil(t, empty.Details.StepResults, "a clone's step results are never nil")
	assert.Nil(t, empty.Details.FinalResult)
}

func TestEventValidate(t *testing.T) {
	tests := []struct {
		name  string
		event progress.Event
		valid bool
	}{
		{"state", progress.Event{Type: progress.EventState, State: progress.StateProgress}, true},
		{"success with result", progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`[1]`)}, true},
		{"success without result", progress.Event{Type: progress.EventState, State: progress.StateSuccess}, true},
		{"status", progress.Event{Type: progress.EventStatus}, true},
		{"token", progress.Event{Type: progress.EventToken, Token: "x"}, true},
		{"progress 0", progress.Event{Type: progress.EventProgress}, true},
		{"progress 100", progress.Event{Type: progress.EventProgress, Progress: 100}, true},
		{"log", progress.LogEvent("x"), true},
		{"tool result", progress.ToolResultEvent("s", "t", 1), true},
		{"unknown state", progress.Event{Type: progress.EventState, State: "DONE"}, false},
		{"empty state", progress.Event{Type: progress.EventState}, false},
		{"result not JSON", progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`{"a"`)}, false},
		{"progress -1", progress.Event{Type: progress.EventProgress, Progress: -1}, false},
		{"progress 101", progress.Event{Type: progress.EventProgress, Progress: 101}, false},
		{"step missing", progress.Event{Type: progress.EventStep}, false},
		{"step data not JSON", progress.Event{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepToolResult, Data: json.RawMessage(`x`)}}, false},
		{"unknown type", progress.Event{Type: "bogus"}, false},
		{"empty type", progress.Event{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.event.Validate()
			if tt.valid {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, progress.ErrInvalidEvent)
			assert.NotContains(t, err.Error(), "\n", "one-line message")
		})
	}
}
