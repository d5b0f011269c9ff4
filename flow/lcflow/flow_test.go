package lcflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/progress"
)

// runFlow runs f as a task with the given inputs and returns its result,
// its error and everything it reported.
func runFlow(t *testing.T, f flow.Flow, inputs string) (any, error, *progress.Recorder) {
	t.Helper()
	rec := progress.NewRecorder()
	res, err := f.Run(t.Context(), &flow.Task{ID: "t1", Flow: "test", Attempt: 1, Inputs: json.RawMessage(inputs), Progress: rec})
	return res, err, rec
}

// stepLines renders step results as comparable lines: "log: <message>" or
// "tool_result: <step> / <tool> / <data>".
func stepLines(snap progress.Snapshot) []string {
	var out []string
	for _, s := range snap.Details.StepResults {
		switch s.Type {
		case progress.StepLog:
			out = append(out, "log: "+s.Message)
		default:
			out = append(out, fmt.Sprintf("%s: %s / %s / %s", s.Type, s.StepName, s.Tool, s.Data))
		}
	}
	return out
}

// assertProgressRises checks that the percentages reported only grow and
// stay between 1 and 99.
func assertProgressRises(t *testing.T, events []progress.Event) {
	t.Helper()
	last := 0
	n := 0
	for _, e := range events {
		if e.Type != progress.EventProgress {
			continue
		}
		n++
		assert.Greater(t, e.Progress, last, "progress must grow")
		assert.Less(t, e.Progress, 100, "100 belongs to the worker")
		last = e.Progress
	}
	assert.Positive(t, n, "some progress must be reported")
}

func llmChain(m llms.Model, template string, vars []string, outputKey string) *chains.LLMChain {
	c := chains.NewLLMChain(m, prompts.NewPromptTemplate(template, vars))
	if outputKey != "" {
		c.OutputKey = outputKey
	}
	return c
}

func TestChainTwoNamedSteps(t *testing.T) {
	const theme = "autumn leaves"
	const poem = "Red and gold they fall, / the wind keeps count of all."
	wantLines := []string{
		"log: Choosing a theme: started",
		"log: Calling the language model",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Calling the language model",
		"log: Writing the poem: done",
	}

	tests := []struct {
		name  string
		build func(m llms.Model) chains.Chain
	}{
		{"lcflow.Sequence", func(m llms.Model) chains.Chain {
			return lcflow.Sequence(
				lcflow.QuietStep("Choosing a theme", llmChain(m, "Suggest a theme for a poem about {{.topic}}.", []string{"topic"}, "theme")),
				lcflow.Step("Writing the poem", llmChain(m, "Write a short poem about {{.theme}}.", []string{"theme"}, "")),
			)
		}},
		{"chains.SequentialChain", func(m llms.Model) chains.Chain {
			c, err := chains.NewSequentialChain([]chains.Chain{
				lcflow.QuietStep("Choosing a theme", llmChain(m, "Suggest a theme for a poem about {{.topic}}.", []string{"topic"}, "theme")),
				lcflow.Step("Writing the poem", llmChain(m, "Write a short poem about {{.theme}}.", []string{"theme"}, "")),
			}, []string{"topic"}, []string{"text"})
			require.NoError(t, err)
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := newScripted(theme, poem)
			f := lcflow.Chain(tt.build(lcflow.Model(model)))

			res, err, rec := runFlow(t, f, `{"topic": "the seasons"}`)
			require.NoError(t, err)

			assert.Equal(t, poem, res)
			assert.Equal(t, wantLines, stepLines(rec.Snapshot()))
			assert.Equal(t, poem, rec.Tokens(), "only the unquiet step streams, and its tokens make the final text")
			assertProgressRises(t, rec.Events())
			prompts := model.Prompts()
			require.Len(t, prompts, 2)
			assert.Contains(t, prompts[0], "the seasons", "the task's input reaches the first prompt")
			assert.Contains(t, prompts[1], theme, "the first step's output reaches the second prompt")
			assert.Equal(t, "Writing the poem", rec.Snapshot().Details.Status, "the status line names the last step")
		})
	}
}

func TestChainStreamsEveryLoudStep(t *testing.T) {
	model := newScripted("one two ", "three four")
	f := lcflow.Chain(lcflow.Sequence(
		lcflow.Step("First", llmChain(model, "first", nil, "a")),
		lcflow.Step("Second", llmChain(model, "second {{.a}}", []string{"a"}, "b")),
	))
	res, err, rec := runFlow(t, f, `{}`)
	require.NoError(t, err)
	assert.Equal(t, "three four", res)
	assert.Equal(t, "one two three four", rec.Tokens())
	var tokens []string
	for _, e := range rec.Events() {
		if e.Type == progress.EventToken {
			tokens = append(tokens, e.Token)
		}
	}
	assert.Equal(t, []string{"one ", "two ", "three ", "four"}, tokens, "one token event per streamed chunk")
}

// jsonTool returns a fixed output and records its inputs.
type jsonTool struct {
	name, output string
	err          error
}

func (j jsonTool) Name() string        { return j.name }
func (j jsonTool) Description() string { return "test tool" }
func (j jsonTool) Call(_ context.Context, input string) (string, error) {
	if j.err != nil {
		return "", j.err
	}
	return strings.ReplaceAll(j.output, "$INPUT", input), nil
}

func TestToolResultInNamedStep(t *testing.T) {
	tests := []struct {
		name     string
		output   string
		wantData string
	}{
		{"JSON output is parsed", `{"results": [{"title": "Go", "url": "https://go.dev", "score": 0.9}], "query": "$INPUT"}`,
			`{"results":[{"title":"Go","url":"https://go.dev","score":0.9}],"query":"what is Go?"}`},
		{"text output is a JSON string", `Go is a language ("$INPUT")`, `"Go is a language (\"what is Go?\")"`},
		{"a JSON number stays a number", ` 42 `, `42`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			search := jsonTool{name: "web_search", output: tt.output}
			model := newScripted("Go is a programming language.")
			f := lcflow.Chain(lcflow.Sequence(
				lcflow.Step("Searching the web", lcflow.ToolChain(search, "question", "results")),
				lcflow.Step("Writing the answer", llmChain(lcflow.Model(model),
					"Answer {{.question}} from {{.results}}", []string{"question", "results"}, "answer")),
			))
			res, err, rec := runFlow(t, f, `{"question": "what is Go?"}`)
			require.NoError(t, err)
			assert.Equal(t, "Go is a programming language.", res)
			assert.Equal(t, []string{
				"log: Searching the web: started",
				`log: Using tool web_search with input "what is Go?"`,
				"tool_result: Searching the web / web_search / " + tt.wantData,
				"log: Searching the web: done",
				"log: Writing the answer: started",
				"log: Calling the language model",
				"log: Writing the answer: done",
			}, stepLines(rec.Snapshot()))
			assertProgressRises(t, rec.Events())
			require.Len(t, model.Prompts(), 1)
			assert.Contains(t, model.Prompts()[0], "what is Go?", "the sequence passes the inputs on to later steps")
		})
	}
}

func TestToolFailureFailsTheFlow(t *testing.T) {
	errDown := errors.New("search backend down")
	f := lcflow.Chain(lcflow.Step("Searching the web", lcflow.ToolChain(jsonTool{name: "web_search", err: errDown}, "question", "results")))
	res, err, rec := runFlow(t, f, `{"question": "q"}`)
	require.Error(t, err)
	assert.Nil(t, res)
	require.ErrorIs(t, err, errDown)
	assert.True(t, strings.HasPrefix(err.Error(), "Searching the web: "), "the error names the step: %v", err)
	assert.Equal(t, []string{
		"log: Searching the web: started",
		`log: Using tool web_search with input "q"`,
		"log: Tool web_search failed: search backend down",
		"log: Searching the web: failed: tool web_search: search backend down",
	}, stepLines(rec.Snapshot()))
}

func TestModelErrorFailsTheFlow(t *testing.T) {
	errQuota := errors.New("quota exceeded")
	model := newScripted("a theme")
	f := lcflow.Chain(lcflow.Sequence(
		lcflow.QuietStep("Choosing a theme", llmChain(lcflow.Model(model), "theme", nil, "theme")),
		lcflow.Step("Writing the poem", llmChain(lcflow.Model(failingModel{errQuota}), "poem {{.theme}}", []string{"theme"}, "")),
	))
	res, err, rec := runFlow(t, f, `{}`)
	require.ErrorIs(t, err, errQuota)
	assert.Nil(t, res)
	assert.Equal(t, "Writing the poem: quota exceeded", err.Error())
	lines := stepLines(rec.Snapshot())
	assert.Equal(t, []string{
		"log: Choosing a theme: started",
		"log: Calling the language model",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Calling the language model",
		"log: Writing the poem: failed: quota exceeded",
	}, lines)
	assert.Contains(t, rec.Snapshot().Details.Status, "quota exceeded")
	assert.Empty(t, rec.Tokens())
}

func TestChainCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f := lcflow.Chain(lcflow.Step("Writing", llmChain(echoModel{}, "hello", nil, "")))
	_, err := f.Run(ctx, &flow.Task{Inputs: json.RawMessage(`{}`), Progress: progress.NewRecorder()})
	require.ErrorIs(t, err, context.Canceled)
}

func TestOutputKey(t *testing.T) {
	twoOutputs := chains.NewTransform(func(context.Context, map[string]any, ...chains.ChainCallOption) (map[string]any, error) {
		return map[string]any{"answer": "yes", "sources": []string{"a", "b"}}, nil
	}, nil, []string{"answer", "sources"})
	withText := chains.NewTransform(func(context.Context, map[string]any, ...chains.ChainCallOption) (map[string]any, error) {
		return map[string]any{"text": "the text", "extra": 1}, nil
	}, nil, []string{"text", "extra"})

	tests := []struct {
		name    string
		chain   chains.Chain
		key     string
		want    any
		wantErr error
	}{
		{"configured key", twoOutputs, "answer", "yes", nil},
		{"text when several outputs", withText, "", "the text", nil},
		{"whole map when no rule applies", twoOutputs, "", map[string]any{"answer": "yes", "sources": []string{"a", "b"}}, nil},
		{"configured key missing", twoOutputs, "nope", nil, lcflow.ErrMissingOutput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := lcflow.Chain(tt.chain)
			f.OutputKey = tt.key
			res, err, _ := runFlow(t, f, `{}`)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, res)
		})
	}
}

func TestValidateAndSchema(t *testing.T) {
	f := lcflow.Chain(llmChain(echoModel{}, "{{.question}} in {{.language}}", []string{"question", "language"}, ""))
	f.InputDescriptions = map[string]string{"question": "what to ask"}

	s := f.InputSchema()
	assert.Equal(t, "object", s.Type)
	assert.Equal(t, []string{"question", "language"}, s.Order)
	assert.Equal(t, []string{"question", "language"}, s.Required)
	assert.Equal(t, "string", s.Properties["question"].Type)
	assert.Equal(t, "what to ask", s.Properties["question"].Description)

	tests := []struct {
		name      string
		inputs    string
		wantField string
	}{
		{"valid", `{"question": "why?", "language": "Go"}`, ""},
		{"missing key", `{"question": "why?"}`, "language"},
		{"null value", `{"question": null, "language": "Go"}`, "question"},
		{"not a string", `{"question": 3, "language": "Go"}`, "question"},
		{"unknown key", `{"question": "why?", "language": "Go", "extra": "x"}`, "extra"},
		{"not an object", `[1]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			norm, err := f.Validate(json.RawMessage(tt.inputs))
			if tt.name == "valid" {
				require.NoError(t, err)
				assert.JSONEq(t, tt.inputs, string(norm))
				return
			}
			require.ErrorIs(t, err, flow.ErrInvalidInputs)
			var ie *flow.InputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tt.wantField, ie.Field)
		})
	}
}

func TestStepOutsideAFlowReportsNothing(t *testing.T) {
	model := newScripted("plain")
	step := lcflow.Step("Alone", llmChain(lcflow.Model(model), "hi", nil, ""))
	out, err := chains.Call(t.Context(), step, map[string]any{})
	require.NoError(t, err)
	assert.Equal(t, "plain", out["text"])
}

func TestHandlerJoinsSplitUTF8(t *testing.T) {
	rec := progress.NewRecorder()
	h := lcflow.NewHandler(rec)
	text := []byte("héllo, 世界 🌍!")
	// Feed the bytes one at a time: every multi-byte rune is split.
	for i := range text {
		h.HandleStreamingFunc(t.Context(), text[i:i+1])
	}
	assert.Equal(t, string(text), rec.Tokens())
	for _, e := range rec.Events() {
		assert.True(t, utf8.ValidString(e.Token), "token %q is not valid UTF-8", e.Token)
	}
}

func TestHandlerProgressStaysBelow100(t *testing.T) {
	rec := progress.NewRecorder()
	h := lcflow.NewHandler(rec)
	ctx := lcflow.WithHandler(t.Context(), h)
	step := lcflow.Step("Again", chains.NewTransform(func(context.Context, map[string]any, ...chains.ChainCallOption) (map[string]any, error) {
		return map[string]any{"x": 1}, nil
	}, nil, []string{"x"}))
	for range 50 {
		_, err := chains.Call(ctx, step, map[string]any{})
		require.NoError(t, err)
	}
	assertProgressRises(t, rec.Events())
	assert.Equal(t, 99, h.Percent())
}

func TestConcurrentFlowsKeepTheirEvents(t *testing.T) {
	// One flow, one model, one tool, shared by every task as a registry
	// shares them.
	f := lcflow.Chain(lcflow.Sequence(
		lcflow.Step("Looking up", lcflow.ToolChain(jsonTool{name: "lookup", output: `{"q": "$INPUT"}`}, "question", "found")),
		lcflow.Step("Answering", llmChain(lcflow.Model(echoModel{}), "Answer:\n{{.question}}", []string{"question"}, "")),
	))
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			q := fmt.Sprintf("question-%d", i)
			rec := progress.NewRecorder()
			res, err := f.Run(t.Context(), &flow.Task{ID: q, Inputs: json.RawMessage(`{"question": "` + q + `"}`), Progress: rec})
			if !assert.NoError(t, err) {
				return
			}
			assert.Equal(t, "echo: "+q, res)
			assert.Equal(t, "echo: "+q, rec.Tokens())
			var tools []string
			for _, s := range rec.Snapshot().Details.StepResults {
				if s.Type == progress.StepToolResult {
					tools = append(tools, string(s.Data))
				}
			}
			assert.Equal(t, []string{`{"q":"` + q + `"}`}, tools)
			assert.Len(t, rec.Snapshot().Details.StepResults, 7)
		})
	}
	wg.Wait()
}
