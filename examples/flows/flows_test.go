package flows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

// noEnv is an empty environment, so that the tests do not depend on the
// keys of the machine they run on.
func noEnv(string) string { return "" }

// envOf returns a getenv reading m.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// fastOffline is the offline configuration at full speed.
var fastOffline = flows.Config{Getenv: noEnv, StepDelay: -1, TokenDelay: -1}

// run validates inputs as start-task would, then runs f for one task,
// recording its progress.
func run(t *testing.T, f flow.Flow, inputs string) (any, *progress.Recorder, error) {
	t.Helper()
	valid, err := flow.Validate(f, json.RawMessage(inputs))
	require.NoError(t, err)
	rec := progress.NewRecorder()
	out, err := f.Run(t.Context(), &flow.Task{ID: "task-1", Flow: "test", Attempt: 1, Inputs: valid, Progress: rec})
	return out, rec, err
}

// steps renders step results one a line: "log: <message>" or
// "tool_result: <step> / <tool>".
func steps(results []progress.StepResult) []string {
	out := make([]string, 0, len(results))
	for _, s := range results {
		if s.Type == progress.StepToolResult {
			out = append(out, fmt.Sprintf("tool_result: %s / %s", s.StepName, s.Tool))
			continue
		}
		out = append(out, s.Type+": "+s.Message)
	}
	return out
}

// toolResults returns the tool results among results.
func toolResults(results []progress.StepResult) []progress.StepResult {
	var out []progress.StepResult
	for _, s := range results {
		if s.Type == progress.StepToolResult {
			out = append(out, s)
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

func assertProgressRises(t *testing.T, events []progress.Event) {
	t.Helper()
	ps := percents(events)
	require.NotEmpty(t, ps, "no progress reported")
	for i := 1; i < len(ps); i++ {
		assert.GreaterOrEqual(t, ps[i], ps[i-1], "progress went back at report %d: %v", i, ps)
	}
	assert.Less(t, ps[len(ps)-1], 100, "100 is the worker's to report, on success")
}

// tokensOf returns the text of the token events, in order.
func tokensOf(events []progress.Event) []string {
	var out []string
	for _, e := range events {
		if e.Type == progress.EventToken {
			out = append(out, e.Token)
		}
	}
	return out
}

func TestPoemWithScriptedModel(t *testing.T) {
	const theme = "a lighthouse at dusk"
	const poem = "The lamp turns slow above the bay,\nit sweeps the dark and shows the way."
	model := llm.NewScripted(theme, poem)

	out, rec, err := run(t, flows.Poem(model), `{}`)
	require.NoError(t, err)
	assert.Equal(t, poem, out)

	assert.Equal(t, []string{
		"log: Choosing a theme: started",
		"log: Calling the language model",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Calling the language model",
		"log: Writing the poem: done",
	}, steps(rec.Snapshot().Details.StepResults))
	assert.Equal(t, llm.Chunks(poem), tokensOf(rec.Events()), "the poem streams chunk by chunk, the theme does not")
	assertProgressRises(t, rec.Events())

	prompts := model.Prompts()
	require.Len(t, prompts, 2)
	assert.Contains(t, prompts[0], "theme")
	assert.Contains(t, prompts[1], "poem about "+theme, "the poem is asked about the chosen theme")
	assert.Zero(t, model.Remaining())
}

func TestPoemWithOfflineModel(t *testing.T) {
	reg := registered(t, fastOffline)
	out, rec, err := run(t, reg[flows.PoemFlowName], `{}`)
	require.NoError(t, err)
	poem, ok := out.(string)
	require.True(t, ok, "result is %T, want string", out)
	assert.Len(t, strings.Split(poem, "\n"), 4, "a four-line poem:\n%s", poem)
	assert.Equal(t, poem, rec.Tokens(), "the tokens concatenate to the poem")
	assert.Contains(t, steps(rec.Snapshot().Details.StepResults), "log: Writing the poem: done")
}

func TestWebSearchWithScriptedModel(t *testing.T) {
	const answer = "Go was designed by Robert Griesemer, Rob Pike and Ken Thompson (https://example.com/offline-sample/1)."
	model := llm.NewScripted(answer)
	out, rec, err := run(t, flows.WebSearch(model, &flows.OfflineSearch{}), `{"question": "Who designed Go?"}`)
	require.NoError(t, err)
	assert.Equal(t, answer, out)

	snap := rec.Snapshot()
	assert.Equal(t, []string{
		"log: Searching the web: started",
		`log: Using tool web_search with input "Who designed Go?"`,
		"tool_result: Searching the web / web_search",
		"log: Searching the web: done",
		"log: Answering the question: started",
		"log: Calling the language model",
		"log: Answering the question: done",
	}, steps(snap.Details.StepResults))

	tr := toolResults(snap.Details.StepResults)
	require.Len(t, tr, 1)
	var res flows.SearchResponse
	require.NoError(t, json.Unmarshal(tr[0].Data, &res), "the tool result carries the results as JSON, not as a string")
	assert.Equal(t, "Who designed Go?", res.Query)
	assert.Equal(t, flows.OfflineNotice, res.Notice)
	require.NotEmpty(t, res.Results)

	prompts := model.Prompts()
	require.Len(t, prompts, 1)
	assert.Contains(t, prompts[0], "Question: Who designed Go?")
	for _, r := range res.Results {
		assert.Contains(t, prompts[0], r.URL, "the model is given the results")
	}
	assert.Equal(t, llm.Chunks(answer), tokensOf(rec.Events()))
	assertProgressRises(t, rec.Events())
}

func TestWebSearchWithOfflineModel(t *testing.T) {
	reg := registered(t, fastOffline)
	out, rec, err := run(t, reg[flows.WebSearchFlowName], `{"question": "Why is the sky blue?"}`)
	require.NoError(t, err)
	answer, ok := out.(string)
	require.True(t, ok, "result is %T, want string", out)
	assert.Equal(t, answer, rec.Tokens())
	assert.Contains(t, answer, "Why is the sky blue?", "the offline answer quotes the results about the question")
	assert.Contains(t, answer, "https://example.com/offline-sample/1")
	assert.Contains(t, answer, flows.OfflineNotice, "the offline answer says its sources are made up")
}

func TestQuestionFlowsValidateTheirInput(t *testing.T) {
	model := llm.NewScripted()
	for name, f := range map[string]flow.Flow{
		"web search":     flows.WebSearch(model, &flows.OfflineSearch{}),
		"research agent": flows.ResearchAgent(model, &flows.OfflineSearch{}),
	} {
		t.Run(name, func(t *testing.T) {
			schema := flow.SchemaOf(f)
			require.NotNil(t, schema)
			assert.Equal(t, []string{"question"}, schema.Required)
			require.Contains(t, schema.Properties, "question")
			assert.Equal(t, "string", schema.Properties["question"].Type)
			assert.NotEmpty(t, schema.Properties["question"].Description)

			tests := []struct {
				name, inputs, field string
			}{
				{name: "missing question", inputs: `{}`, field: "question"},
				{name: "no inputs at all", inputs: ``, field: "question"},
				{name: "null question", inputs: `{"question": null}`, field: "question"},
				{name: "blank question", inputs: `{"question": "  \t"}`, field: "question"},
				{name: "wrong type", inputs: `{"question": 42}`, field: "question"},
				{name: "unknown field", inputs: `{"question": "q", "colour": "red"}`, field: "colour"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, err := flow.Validate(f, json.RawMessage(tt.inputs))
					require.ErrorIs(t, err, flow.ErrInvalidInputs)
					var ie *flow.InputError
					require.ErrorAs(t, err, &ie)
					assert.Equal(t, tt.field, ie.Field)
				})
			}
			got, err := flow.Validate(f, json.RawMessage(`{"question": "q"}`))
			require.NoError(t, err)
			assert.JSONEq(t, `{"question": "q"}`, string(got))
		})
	}
}

func TestResearchAgentWithScriptedModel(t *testing.T) {
	model := llm.NewScripted(
		"Thought: I should multiply.\nAction: calculator\nAction Input: 12 * 7",
		"Thought: I now know the final answer.\nFinal Answer: 12 * 7 is 84.",
	)
	out, rec, err := run(t, flows.ResearchAgent(model, &flows.OfflineSearch{}), `{"question": "What is 12 * 7?"}`)
	require.NoError(t, err)
	assert.Equal(t, "12 * 7 is 84.", out)

	snap := rec.Snapshot()
	assert.Equal(t, []string{
		"log: Researching: started",
		"log: Calling the language model",
		`log: Using tool calculator with input "12 * 7"`,
		"tool_result: Researching / calculator",
		"log: Calling the language model",
		"log: Agent finished",
		"log: Researching: done",
	}, steps(snap.Details.StepResults))
	tr := toolResults(snap.Details.StepResults)
	require.Len(t, tr, 1)
	assert.JSONEq(t, `84`, string(tr[0].Data), "the calculator really ran")
	assert.Empty(t, rec.Tokens(), "the agent's thoughts are not streamed as the answer")
	assertProgressRises(t, rec.Events())

	prompts := model.Prompts()
	require.Len(t, prompts, 2)
	assert.Contains(t, prompts[0], "Question: What is 12 * 7?", "the flow's question is the agent's input")
	assert.Contains(t, prompts[0], "web_search, calculator", "the agent is offered both tools")
	assert.Contains(t, prompts[1], "Observation: 84")
}

func TestResearchAgentWithOfflineModel(t *testing.T) {
	reg := registered(t, fastOffline)
	tests := []struct {
		name, question, tool string
		check                func(t *testing.T, answer string, data json.RawMessage)
	}{
		{
			name: "arithmetic", question: "What is 12 * 7?", tool: "calculator",
			check: func(t *testing.T, answer string, data json.RawMessage) {
				assert.JSONEq(t, `84`, string(data))
				assert.Contains(t, answer, "84")
			},
		},
		{
			name: "facts", question: "Who designed Go?", tool: "web_search",
			check: func(t *testing.T, answer string, data json.RawMessage) {
				var res flows.SearchResponse
				require.NoError(t, json.Unmarshal(data, &res))
				assert.Equal(t, "Who designed Go?", res.Query)
				assert.Contains(t, answer, res.Results[0].URL)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rec, err := run(t, reg[flows.ResearchAgentName], fmt.Sprintf(`{"question": %q}`, tt.question))
			require.NoError(t, err)
			answer, ok := out.(string)
			require.True(t, ok, "result is %T, want string", out)
			results := rec.Snapshot().Details.StepResults
			assert.Contains(t, steps(results), "log: Agent finished")
			tr := toolResults(results)
			require.Len(t, tr, 1, "steps: %q", steps(results))
			assert.Equal(t, flows.StepResearch, tr[0].StepName)
			assert.Equal(t, tt.tool, tr[0].Tool, "the agent chose its tool by the question")
			tt.check(t, answer, tr[0].Data)
		})
	}
}

func TestModelErrorFailsTheFlow(t *testing.T) {
	model := llm.NewScripted("a theme")
	model.PushError(errQuota)
	_, rec, err := run(t, flows.Poem(model), `{}`)
	require.ErrorIs(t, err, errQuota)
	assert.Contains(t, err.Error(), flows.StepWritePoem, "the error names the step")
	assert.Contains(t, steps(rec.Snapshot().Details.StepResults), "log: Writing the poem: failed: "+errQuota.Error())
}

var errQuota = fmt.Errorf("quota exceeded")

func TestFlowsStopWhenCancelled(t *testing.T) {
	slow := flows.Config{Getenv: noEnv, StepDelay: time.Hour, TokenDelay: time.Hour}
	reg := registered(t, slow)
	tests := []struct {
		name, inputs string
	}{
		{flows.PoemFlowName, `{}`},
		{flows.WebSearchFlowName, `{"question": "q"}`},
		{flows.ResearchAgentName, `{"question": "q"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := reg[tt.name]
			inputs, err := flow.Validate(f, json.RawMessage(tt.inputs))
			require.NoError(t, err)
			task := &flow.Task{ID: "task-3", Attempt: 1, Inputs: inputs, Progress: progress.NewRecorder()}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := f.Run(ctx, task)
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

func TestOfflineSearch(t *testing.T) {
	var s tools.Tool = &flows.OfflineSearch{}

	out, err := s.Call(t.Context(), "  why is the sky blue?  ")
	require.NoError(t, err)
	var res flows.SearchResponse
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, "why is the sky blue?", res.Query)
	assert.Equal(t, flows.OfflineNotice, res.Notice)
	require.Len(t, res.Results, 3)
	for _, r := range res.Results {
		assert.Contains(t, r.Title, "offline sample data", "every result says it is not real")
		assert.True(t, strings.HasPrefix(r.URL, "https://example.com/"), "sample URLs point nowhere real: %s", r.URL)
	}
	assert.Contains(t, res.Results[0].Content, "why is the sky blue?")

	_, err = s.Call(t.Context(), " \n")
	assert.ErrorIs(t, err, flows.ErrEmptyQuery)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = (&flows.OfflineSearch{Delay: time.Hour}).Call(ctx, "q")
	assert.ErrorIs(t, err, context.Canceled)
}

// A model given by Config replaces the one the environment asks for.
func TestConfigModelReplacesTheEnvironment(t *testing.T) {
	model := llm.NewScripted("theme", "poem")
	reg := registered(t, flows.Config{Getenv: envOf(map[string]string{"GEMINI_API_KEY": "unused"}), Model: model})
	out, _, err := run(t, reg[flows.PoemFlowName], `{}`)
	require.NoError(t, err)
	assert.Equal(t, "poem", out)
	assert.Zero(t, model.Remaining())
}
