package lcflow_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/agents"
	"github.com/tmc/langchaingo/callbacks"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/schema"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/progress"
)

func TestAgentExecutorFlow(t *testing.T) {
	const (
		think  = "Thought: I should compute it.\nAction: calculator\nAction Input: 6*7"
		answer = "Thought: I know the answer.\nFinal Answer: 42"
	)
	tests := []struct {
		name string
		tool tools.Tool
	}{
		// The executor's agent action names the tool the calculator's own
		// callbacks cannot name.
		{"tool reporting to its own handler", tools.Calculator{CallbacksHandler: lcflow.Callbacks}},
		// The wrapper reports the tool; the tool's own callbacks are not
		// reported twice.
		{"wrapped tool reporting to its own handler", lcflow.Tool(tools.Calculator{CallbacksHandler: lcflow.Callbacks})},
		{"wrapped tool", lcflow.Tool(tools.Calculator{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := newScripted(think, answer)
			agent := agents.NewOneShotAgent(lcflow.Model(model), []tools.Tool{tt.tool},
				agents.WithCallbacksHandler(lcflow.Callbacks))
			executor := agents.NewExecutor(agent, agents.WithCallbacksHandler(lcflow.Callbacks), agents.WithMaxIterations(3))
			f := lcflow.Chain(lcflow.Step("Researching", executor))

			res, err, rec := runFlow(t, f, `{"input": "what is six times seven?"}`)
			require.NoError(t, err)
			assert.Equal(t, "42", res)
			assert.Equal(t, []string{
				"log: Researching: started",
				"log: Calling the language model",
				`log: Using tool calculator with input "6*7"`,
				"tool_result: Researching / calculator / 42",
				"log: Calling the language model",
				"log: Agent finished",
				"log: Researching: done",
			}, stepLines(rec.Snapshot()))
			assert.Equal(t, think+answer, rec.Tokens(), "the agent streams its reasoning and its answer")
			assertProgressRises(t, rec.Events())
			prompts := model.Prompts()
			require.Len(t, prompts, 2)
			assert.True(t, strings.Contains(prompts[1], "Observation: 42"), "the tool's output reaches the agent")
		})
	}
}

func TestHandlerToolEndWithoutAName(t *testing.T) {
	rec := progress.NewRecorder()
	h := lcflow.NewHandler(rec)
	h.HandleToolEnd(t.Context(), `["a","b"]`)
	steps := rec.Snapshot().Details.StepResults
	require.Len(t, steps, 1)
	assert.Equal(t, progress.StepToolResult, steps[0].Type)
	assert.Equal(t, "tool", steps[0].Tool)
	assert.Equal(t, "tool", steps[0].StepName, "outside a step the tool names the step")
	assert.JSONEq(t, `["a","b"]`, string(steps[0].Data))
}

func TestCallbacksOutsideATaskDoNothing(t *testing.T) {
	// A component built with Callbacks may also run outside any task.
	out, err := tools.Calculator{CallbacksHandler: lcflow.Callbacks}.Call(t.Context(), "1+1")
	require.NoError(t, err)
	assert.Equal(t, "2", out)
	assert.Nil(t, lcflow.HandlerFromContext(t.Context()))
}

func TestAgentOutOfIterations(t *testing.T) {
	const think = "Thought: again.\nAction: Calculator\nAction Input: 1+1"
	model := newScripted(think, think)
	agent := agents.NewOneShotAgent(model, []tools.Tool{lcflow.Tool(tools.Calculator{})})
	executor := agents.NewExecutor(agent, agents.WithCallbacksHandler(lcflow.Callbacks), agents.WithMaxIterations(2))

	res, err, rec := runFlow(t, lcflow.Chain(executor), `{"input": "loop"}`)
	require.ErrorIs(t, err, agents.ErrNotFinished)
	assert.Nil(t, res)
	assert.Equal(t, []string{
		// The agent says "Calculator", the tool is "calculator": the
		// executor matches them regardless of case, and so does the
		// wrapper, which does not announce the call a second time.
		`log: Using tool Calculator with input "1+1"`,
		"tool_result: calculator / calculator / 2",
		`log: Using tool Calculator with input "1+1"`,
		"tool_result: calculator / calculator / 2",
		"log: Agent stopped before finishing",
	}, stepLines(rec.Snapshot()))
}

// providerModel reports to its own callbacks handler, as langchaingo's
// providers do.
type providerModel struct {
	CallbacksHandler callbacks.Handler
	inner            llms.Model
}

func (p providerModel) GenerateContent(ctx context.Context, msgs []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	p.CallbacksHandler.HandleLLMGenerateContentStart(ctx, msgs)
	return p.inner.GenerateContent(ctx, msgs, options...)
}

func (p providerModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, p, prompt, options...)
}

func TestCallbacksRouteToTheTaskHandler(t *testing.T) {
	tests := []struct {
		name  string
		model llms.Model
		want  []string
	}{
		{"provider reporting through Callbacks", providerModel{CallbacksHandler: lcflow.Callbacks, inner: echoModel{}},
			[]string{"log: Asking: started", "log: Calling the language model", "log: Asking: done"}},
		{"wrapped provider is reported once", lcflow.Model(providerModel{CallbacksHandler: lcflow.Callbacks, inner: echoModel{}}),
			[]string{"log: Asking: started", "log: Calling the language model", "log: Asking: done"}},
		{"unreported model", echoModel{},
			[]string{"log: Asking: started", "log: Asking: done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err, rec := runFlow(t, lcflow.Chain(lcflow.Step("Asking", llmChain(tt.model, "hello", nil, ""))), `{}`)
			require.NoError(t, err)
			assert.Equal(t, "echo: hello", res)
			assert.Equal(t, tt.want, stepLines(rec.Snapshot()))
			assert.Equal(t, "echo: hello", rec.Tokens())
		})
	}
}

func TestHandlerRetrieverEntries(t *testing.T) {
	rec := progress.NewRecorder()
	ctx := lcflow.WithHandler(t.Context(), lcflow.NewHandler(rec))
	lcflow.Callbacks.HandleRetrieverStart(ctx, "go history")
	lcflow.Callbacks.HandleRetrieverEnd(ctx, "go history", []schema.Document{{PageContent: "a"}, {PageContent: "b"}})
	assert.Equal(t, []string{`log: Retrieving documents for "go history"`, "log: Retrieved 2 documents"}, stepLines(rec.Snapshot()))
}
