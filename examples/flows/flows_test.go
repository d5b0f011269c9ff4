package flows

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

// fast is the pace the tests run the flows at.
var fast = Config{StepDelay: -1, TokenDelay: -1}

// run runs f for a task with the given id and inputs, recording its
// progress.
func run(t *testing.T, ctx context.Context, f flow.Flow, id string, inputs string) (any, *progress.Recorder, error) {
	t.Helper()
	rec := progress.NewRecorder()
	valid, err := flow.Validate(f, json.RawMessage(inputs))
	require.NoError(t, err)
	out, err := f.Run(ctx, &flow.Task{ID: id, Flow: "test", Attempt: 1, Inputs: valid, Progress: rec})
	return out, rec, err
}

// logs returns the messages of the log steps of snap, in order.
func logs(snap progress.Snapshot) []string {
	var out []string
	for _, s := range snap.Details.StepResults {
		if s.Type == progress.StepLog {
			out = append(out, s.Message)
		}
	}
	return out
}

// percents returns the percentages reported, in order.
func percents(events []progress.Event) []int {
	var out []int
	for _, e := range events {
		if e.Type == progress.EventProgress {
			out = append(out, e.Progress)
		}
	}
	return out
}

func assertMonotonic(t *testing.T, ps []int) {
	t.Helper()
	for i := 1; i < len(ps); i++ {
		assert.GreaterOrEqual(t, ps[i], ps[i-1], "progress went back at report %d: %v", i, ps)
	}
}

func TestPoemReportsStepsAndStreamsThePoem(t *testing.T) {
	out, rec, err := run(t, t.Context(), Poem(fast), "task-1", `{}`)
	require.NoError(t, err)
	poem, ok := out.(string)
	require.True(t, ok, "result is %T, want string", out)

	assert.Len(t, strings.Split(poem, "\n"), 4)
	assert.Equal(t, poem, rec.Tokens(), "the tokens concatenate to the poem")

	snap := rec.Snapshot()
	assert.Equal(t, progress.StateProgress, snap.State)
	theme := chooseTheme("task-1").name
	assert.Equal(t, []string{"Choosing a theme", "Theme chosen: " + theme, "Writing the poem", "Poem written"}, logs(snap))

	ps := percents(rec.Events())
	assert.Contains(t, ps, 30)
	assertMonotonic(t, ps)
	assert.Less(t, ps[len(ps)-1], 100, "100 is the worker's to report, on success")
}

func TestPoemThemeFollowsTaskID(t *testing.T) {
	poems := map[string]bool{}
	for i := range 32 {
		id := fmt.Sprintf("task-%d", i)
		first, _, err := run(t, t.Context(), Poem(fast), id, `{}`)
		require.NoError(t, err)
		again, _, err := run(t, t.Context(), Poem(fast), id, `{}`)
		require.NoError(t, err)
		assert.Equal(t, first, again, "a retried task writes the same poem")
		poems[first.(string)] = true
	}
	assert.Greater(t, len(poems), 1, "different tasks get different poems")
}

func TestWebSearchAnswersFromOfflineResults(t *testing.T) {
	out, rec, err := run(t, t.Context(), WebSearch(fast), "task-2", `{"question": "Why is the sky blue?"}`)
	require.NoError(t, err)
	answer, ok := out.(string)
	require.True(t, ok, "result is %T, want string", out)
	assert.Contains(t, answer, "Why is the sky blue?")
	assert.Contains(t, answer, "offline")
	assert.Equal(t, answer, rec.Tokens())

	snap := rec.Snapshot()
	var tools []progress.StepResult
	for _, s := range snap.Details.StepResults {
		if s.Type == progress.StepToolResult {
			tools = append(tools, s)
		}
	}
	require.Len(t, tools, 1)
	assert.Equal(t, "search", tools[0].StepName)
	assert.Equal(t, "web_search", tools[0].Tool)
	var results []SearchResult
	require.NoError(t, json.Unmarshal(tools[0].Data, &results))
	require.NotEmpty(t, results)
	for _, r := range results {
		assert.Contains(t, r.Title, "offline sample data", "every result says it is not real")
		assert.True(t, strings.HasPrefix(r.URL, "https://example.com/"), "sample urls point nowhere real: %s", r.URL)
		assert.Contains(t, answer, r.URL, "the answer cites what it read")
	}

	msgs := logs(snap)
	require.NotEmpty(t, msgs)
	assert.Equal(t, "Searching the web", msgs[0])
	assert.Contains(t, msgs, "Composing the answer")
	assertMonotonic(t, percents(rec.Events()))
}

func TestWebSearchValidatesItsInput(t *testing.T) {
	tests := []struct {
		name   string
		inputs string
		field  string
	}{
		{name: "missing question", inputs: `{}`, field: "question"},
		{name: "no inputs at all", inputs: ``, field: "question"},
		{name: "null question", inputs: `{"question": null}`, field: "question"},
		{name: "blank question", inputs: `{"question": "  \t"}`, field: "question"},
		{name: "wrong type", inputs: `{"question": 42}`, field: "question"},
		{name: "unknown field", inputs: `{"question": "q", "colour": "red"}`, field: "colour"},
	}
	f := WebSearch(fast)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := flow.Validate(f, json.RawMessage(tt.inputs))
			require.ErrorIs(t, err, flow.ErrInvalidInputs)
			var ie *flow.InputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tt.field, ie.Field)
		})
	}
	t.Run("valid", func(t *testing.T) {
		got, err := flow.Validate(f, json.RawMessage(`{"question": "q"}`))
		require.NoError(t, err)
		assert.JSONEq(t, `{"question": "q"}`, string(got))
	})
}

func TestFlowsStopWhenCancelled(t *testing.T) {
	slow := Config{StepDelay: time.Hour, TokenDelay: time.Hour}
	tests := []struct {
		name   string
		flow   flow.Flow
		inputs string
	}{
		{"poem", Poem(slow), `{}`},
		{"web search", WebSearch(slow), `{"question": "q"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inputs, err := flow.Validate(tt.flow, json.RawMessage(tt.inputs))
			require.NoError(t, err)
			task := &flow.Task{ID: "task-3", Attempt: 1, Inputs: inputs, Progress: progress.NewRecorder()}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := tt.flow.Run(ctx, task)
				done <- err
			}()
			cancel()
			select {
			case err := <-done:
				assert.ErrorIs(t, err, context.Canceled)
			case <-time.After(10 * time.Second):
				t.Fatal("the flow did not return after its context was cancelled")
			}
		})
	}
}

func TestTokensConcatenateToTheText(t *testing.T) {
	for _, text := range []string{"", "word", "two words", "line one\nline two", " leading and trailing ", "a\n\nb"} {
		var got []string
		for tok := range tokens(text) {
			require.NotEmpty(t, tok)
			got = append(got, tok)
		}
		assert.Equal(t, text, strings.Join(got, ""), "text %q", text)
	}
}

func TestConfigDefaults(t *testing.T) {
	assert.Equal(t, DefaultStepDelay, Config{}.step())
	assert.Equal(t, DefaultTokenDelay, Config{}.token())
	assert.Equal(t, time.Duration(0), fast.step())
	assert.Equal(t, 5*time.Millisecond, Config{TokenDelay: 5 * time.Millisecond}.token())
}
