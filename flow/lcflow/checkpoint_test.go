package lcflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/agents"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/progress"
)

// durableTask is one task of a checkpoint store, run attempt after
// attempt as a worker would run it.
type durableTask struct {
	store *progress.MemoryStore
	id    string
}

func newDurableTask(t *testing.T) *durableTask {
	t.Helper()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(t.Context(), "task-1"))
	return &durableTask{store: s, id: "task-1"}
}

// run runs f as the given attempt of the task.
func (d *durableTask) run(t *testing.T, f flow.Flow, attempt int, inputs string) (any, error, *progress.Recorder) {
	t.Helper()
	rec := progress.NewRecorder()
	res, err := f.Run(t.Context(), &flow.Task{
		ID: d.id, Flow: "test", Attempt: attempt, Inputs: json.RawMessage(inputs), Progress: rec,
		Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{Store: d.store, TaskID: d.id, Attempt: attempt}),
	})
	return res, err, rec
}

// countingTool is a tool that counts its calls and answers with its
// input, upper-cased.
type countingTool struct {
	name  string
	calls *atomic.Int32
}

func (c countingTool) Name() string        { return c.name }
func (c countingTool) Description() string { return "test tool" }
func (c countingTool) Call(_ context.Context, input string) (string, error) {
	c.calls.Add(1)
	return strings.ToUpper(input), nil
}

func TestModelCallsReplayedOnTheNextAttempt(t *testing.T) {
	d := newDurableTask(t)
	build := func(m llms.Model) flow.Flow {
		return lcflow.Chain(lcflow.Sequence(
			lcflow.QuietStep("Choosing a theme", llmChain(lcflow.Model(m), "Suggest a theme about {{.topic}}.", []string{"topic"}, "theme")),
			lcflow.Step("Writing the poem", llmChain(lcflow.Model(m), "Write a poem about {{.theme}}.", []string{"theme"}, "")),
		))
	}

	// Attempt 1: the theme comes back, the poem's call fails.
	first := newScripted("autumn leaves")
	_, err, _ := d.run(t, build(first), 1, `{"topic": "seasons"}`)
	require.Error(t, err)
	require.Len(t, first.Prompts(), 2)

	// Attempt 2: the theme is replayed, the poem is asked for.
	second := newScripted("Red and gold they fall.")
	res, err, rec := d.run(t, build(second), 2, `{"topic": "seasons"}`)
	require.NoError(t, err)
	assert.Equal(t, "Red and gold they fall.", res)
	prompts := second.Prompts()
	require.Len(t, prompts, 1, "the model was asked once: for the poem")
	assert.Contains(t, prompts[0], "autumn leaves", "the replayed theme reaches the next prompt")
	assert.Equal(t, []string{
		"log: Choosing a theme: started",
		"log: Language model: answer replayed from attempt 1",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Calling the language model",
		"log: Writing the poem: done",
	}, stepLines(rec.Snapshot()))
	assertProgressRises(t, rec.Events())

	// Attempt 3 (the worker died before recording the end): nothing is
	// asked again.
	third := newScripted()
	res, err, rec = d.run(t, build(third), 3, `{"topic": "seasons"}`)
	require.NoError(t, err)
	assert.Equal(t, "Red and gold they fall.", res)
	assert.Empty(t, third.Prompts())
	assert.Empty(t, rec.Tokens(), "a replayed answer is not streamed again")
	assert.Equal(t, []string{
		"log: Choosing a theme: started",
		"log: Language model: answer replayed from attempt 1",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Language model: answer replayed from attempt 2",
		"log: Writing the poem: done",
	}, stepLines(rec.Snapshot()))
}

func TestChangedPromptRunsAgain(t *testing.T) {
	d := newDurableTask(t)
	flowWith := func(m llms.Model, template string) flow.Flow {
		return lcflow.Chain(lcflow.Step("Answering", llmChain(lcflow.Model(m), template, []string{"q"}, "")))
	}
	_, err, _ := d.run(t, flowWith(newScripted("old answer"), "Answer {{.q}}."), 1, `{"q": "why?"}`)
	require.NoError(t, err)

	t.Run("another prompt", func(t *testing.T) {
		m := newScripted("new answer")
		res, err, _ := d.run(t, flowWith(m, "Answer {{.q}} briefly."), 2, `{"q": "why?"}`)
		require.NoError(t, err)
		assert.Equal(t, "new answer", res, "a prompt changed by the code is asked again, not answered from the record")
		assert.Len(t, m.Prompts(), 1)
	})
	t.Run("another input", func(t *testing.T) {
		m := newScripted("other answer")
		res, err, _ := d.run(t, flowWith(m, "Answer {{.q}}."), 3, `{"q": "how?"}`)
		require.NoError(t, err)
		assert.Equal(t, "other answer", res)
	})
	t.Run("another step name", func(t *testing.T) {
		m := newScripted("renamed answer")
		f := lcflow.Chain(lcflow.Step("Replying", llmChain(lcflow.Model(m), "Answer {{.q}}.", []string{"q"}, "")))
		res, err, _ := d.run(t, f, 4, `{"q": "why?"}`)
		require.NoError(t, err)
		assert.Equal(t, "renamed answer", res)
	})
	t.Run("the same prompt", func(t *testing.T) {
		m := newScripted()
		res, err, _ := d.run(t, flowWith(m, "Answer {{.q}}."), 5, `{"q": "why?"}`)
		require.NoError(t, err)
		assert.Equal(t, "old answer", res)
		assert.Empty(t, m.Prompts())
	})
}

func TestRepeatedCallsReplayInOrder(t *testing.T) {
	d := newDurableTask(t)
	// The same prompt twice in a run: two samples, told apart by order.
	build := func(m llms.Model) flow.Flow {
		return lcflow.Chain(lcflow.Sequence(
			lcflow.Step("First draft", llmChain(lcflow.Model(m), "Write a line.", nil, "a")),
			lcflow.Step("Second draft", llmChain(lcflow.Model(m), "Write a line.", nil, "b")),
			lcflow.Step("Pick", llmChain(lcflow.Model(m), "Pick one of {{.a}} and {{.b}}.", []string{"a", "b"}, "")),
		))
	}
	_, err, _ := d.run(t, build(newScripted("line one", "line two")), 1, `{}`)
	require.Error(t, err, "no answer left for the third call")

	m := newScripted("line two wins")
	res, err, _ := d.run(t, build(m), 2, `{}`)
	require.NoError(t, err)
	assert.Equal(t, "line two wins", res)
	require.Len(t, m.Prompts(), 1)
	assert.Contains(t, m.Prompts()[0], "Pick one of line one and line two", "each sample replayed in its place")
}

// The answers of lookupAgent's model: an action, then a final answer.
const (
	lookupThink  = "Thought: I should look it up.\nAction: lookup\nAction Input: go"
	lookupAnswer = "Thought: I know.\nFinal Answer: GO"
)

// lookupAgent is a flow that runs an agent on m with the tool lookup,
// which counts its calls in calls.
func lookupAgent(m llms.Model, calls *atomic.Int32) flow.Flow {
	agent := agents.NewOneShotAgent(lcflow.Model(m), []tools.Tool{lcflow.Tool(countingTool{name: "lookup", calls: calls})},
		agents.WithCallbacksHandler(lcflow.Callbacks))
	executor := agents.NewExecutor(agent, agents.WithCallbacksHandler(lcflow.Callbacks), agents.WithMaxIterations(3))
	return lcflow.Chain(lcflow.QuietStep("Researching", executor))
}

func TestAgentToolCallsReplayed(t *testing.T) {
	d := newDurableTask(t)
	var calls atomic.Int32
	build := func(m llms.Model) flow.Flow { return lookupAgent(m, &calls) }

	// Attempt 1: the agent acts, the tool answers, the model fails.
	_, err, rec := d.run(t, build(newScripted(lookupThink)), 1, `{"input": "what is go?"}`)
	require.Error(t, err)
	require.Equal(t, int32(1), calls.Load())
	assert.Contains(t, stepLines(rec.Snapshot()), "tool_result: Researching / lookup / \"GO\"")

	m := newScripted(lookupAnswer)
	res, err, rec := d.run(t, build(m), 2, `{"input": "what is go?"}`)
	require.NoError(t, err)
	assert.Equal(t, "GO", res)
	assert.Equal(t, int32(1), calls.Load(), "the tool was not called again")
	require.Len(t, m.Prompts(), 1, "only the last model call was made")
	assert.Contains(t, m.Prompts()[0], "Observation: GO", "the replayed observation reaches the agent")
	assert.Equal(t, []string{
		"log: Researching: started",
		"log: Language model: answer replayed from attempt 1",
		`log: Using tool lookup with input "go"`,
		"log: Tool lookup: output replayed from attempt 1",
		"log: Calling the language model",
		"log: Agent finished",
		"log: Researching: done",
	}, stepLines(rec.Snapshot()), "no tool_result twice: attempt 1 reported it")
	assertProgressRises(t, rec.Events())
}

// extrasModel answers "ok" with provider extras that have no JSON form.
type extrasModel struct{ calls *atomic.Int32 }

func (m extrasModel) GenerateContent(context.Context, []llms.MessageContent, ...llms.CallOption) (*llms.ContentResponse, error) {
	m.calls.Add(1)
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{
		Content: "ok", StopReason: "stop", GenerationInfo: map[string]any{"callback": func() {}},
	}}}, nil
}

func (m extrasModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

func TestAnswerWithoutJSONExtrasIsRecordedWithoutThem(t *testing.T) {
	d := newDurableTask(t)
	var calls atomic.Int32
	f := lcflow.Chain(lcflow.Step("Asking", llmChain(lcflow.Model(extrasModel{calls: &calls}), "Say ok.", nil, "")))
	for attempt := 1; attempt <= 2; attempt++ {
		res, err, _ := d.run(t, f, attempt, `{}`)
		require.NoError(t, err)
		assert.Equal(t, "ok", res)
	}
	assert.Equal(t, int32(1), calls.Load(), "recorded without its extras, and replayed")
}

func TestNoCheckpointsOutsideAWorker(t *testing.T) {
	// A Task made by hand (a unit test of a flow) has no checkpoints:
	// every call runs.
	m := newScripted("one", "two")
	f := lcflow.Chain(lcflow.Step("Asking", llmChain(lcflow.Model(m), "Say something.", nil, "")))
	for range 2 {
		_, err, _ := runFlow(t, f, `{}`)
		require.NoError(t, err)
	}
	assert.Len(t, m.Prompts(), 2)
}

// TestCallsResumedFromDeadTask checks that a task that resumes a dead one
// (flow.CheckpointsConfig.ResumeFrom, set by a worker for
// queue.RequeueOptions.Resume) replays the dead task's model and tool
// calls, and says where they came from.
func TestCallsResumedFromDeadTask(t *testing.T) {
	d := newDurableTask(t)
	var calls atomic.Int32
	build := func(m llms.Model) flow.Flow { return lookupAgent(m, &calls) }
	// The dead task: the agent acts, the tool answers, the model fails.
	_, err, _ := d.run(t, build(newScripted(lookupThink)), 1, `{"input": "what is go?"}`)
	require.Error(t, err)
	require.Equal(t, int32(1), calls.Load())

	ctx := t.Context()
	require.NoError(t, d.store.Create(ctx, "task-2"))
	m := newScripted(lookupAnswer)
	rec := progress.NewRecorder()
	res, err := build(m).Run(ctx, &flow.Task{
		ID: "task-2", Flow: "test", Attempt: 1, Inputs: json.RawMessage(`{"input": "what is go?"}`), Progress: rec,
		Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{Store: d.store, TaskID: "task-2", Attempt: 1, ResumeFrom: d.id, Progress: rec}),
	})
	require.NoError(t, err)
	assert.Equal(t, "GO", res)
	assert.Equal(t, int32(1), calls.Load(), "the tool was not called again")
	require.Len(t, m.Prompts(), 1, "only the call that failed was made again")
	assert.Equal(t, []string{
		"log: Researching: started",
		"log: Language model: answer replayed from task task-1",
		`log: Using tool lookup with input "go"`,
		"log: Tool lookup: output replayed from task task-1",
		"log: Calling the language model",
		"log: Agent finished",
		"log: Researching: done",
	}, stepLines(rec.Snapshot()))
}

// A plain Go flow that runs a chain itself with TaskHandler, as the
// README's "Plain Go beside it" does, has its model calls recorded and
// replayed as a Flow's are; one with NewHandler reports them only.
func TestPlainGoFlowWithTaskHandlerReplays(t *testing.T) {
	plain := func(m llms.Model, handler func(*flow.Task) *lcflow.Handler) flow.Flow {
		summarise := llmChain(lcflow.Model(m), "Summarise {{.text}}.", []string{"text"}, "")
		return flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
			h := handler(t)
			ctx = lcflow.WithHandler(ctx, h)
			return chains.Run(ctx, summarise, "Go", chains.WithCallback(h))
		})
	}
	for _, c := range []struct {
		name    string
		handler func(*flow.Task) *lcflow.Handler
		replays bool
	}{
		{"TaskHandler", lcflow.TaskHandler, true},
		{"NewHandler", func(t *flow.Task) *lcflow.Handler { return lcflow.NewHandler(t.Progress) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDurableTask(t)
			first := newScripted("A language.")
			res, err, _ := d.run(t, plain(first, c.handler), 1, `{}`)
			require.NoError(t, err)
			assert.Equal(t, "A language.", res)

			second := newScripted("Another answer.")
			res, err, rec := d.run(t, plain(second, c.handler), 2, `{}`)
			require.NoError(t, err)
			if !c.replays {
				assert.Len(t, second.Prompts(), 1, "the model is asked again")
				assert.Equal(t, "Another answer.", res)
				return
			}
			assert.Empty(t, second.Prompts(), "the model is not asked again")
			assert.Equal(t, "A language.", res)
			assert.Equal(t, []string{"log: Language model: answer replayed from attempt 1"}, stepLines(rec.Snapshot()))
		})
	}
}

// failingFirst fails its first fails calls, then answers as inner does.
type failingFirst struct {
	fails atomic.Int32
	inner *scriptedModel
}

func (m *failingFirst) GenerateContent(ctx context.Context, msgs []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	if m.fails.Add(-1) >= 0 {
		return nil, errors.New("API returned unexpected status code: 503: overloaded")
	}
	return m.inner.GenerateContent(ctx, msgs, options...)
}

func (m *failingFirst) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

// flakyTool fails its first call, then answers "ok".
type flakyTool struct{ calls *atomic.Int32 }

func (flakyTool) Name() string        { return "flaky" }
func (flakyTool) Description() string { return "test tool" }
func (f flakyTool) Call(context.Context, string) (string, error) {
	if f.calls.Add(1) == 1 {
		return "", errors.New("connection reset")
	}
	return "ok", nil
}

// TestCallTriedAgainInTheRunIsReplayed: a flow that tries a failed call
// again itself (a retry loop around a flaky provider) gets the answer of
// the try that succeeded replayed on its next attempt, under the key a
// first try has: the failed try does not use up the call's place.
func TestCallTriedAgainInTheRunIsReplayed(t *testing.T) {
	d := newDurableTask(t)
	var tools atomic.Int32
	build := func(m llms.Model) flow.Flow {
		return flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
			ctx = lcflow.WithHandler(ctx, lcflow.TaskHandler(t))
			lm := lcflow.Model(m)
			var answer string
			var err error
			for range 3 { // the flow's own retries
				if answer, err = llms.GenerateFromSinglePrompt(ctx, lm, "Summarise Go."); err == nil {
					break
				}
			}
			if err != nil {
				return nil, err
			}
			tool := lcflow.Tool(flakyTool{calls: &tools})
			for range 2 {
				if _, err = tool.Call(ctx, "go"); err == nil {
					break
				}
			}
			if err != nil {
				return nil, err
			}
			if t.Attempt == 1 {
				return nil, errors.New("a later step failed")
			}
			return answer, nil
		})
	}

	first := &failingFirst{inner: newScripted("A small language.")}
	first.fails.Store(2)
	_, err, _ := d.run(t, build(first), 1, `{}`)
	require.Error(t, err)
	require.Len(t, first.inner.Prompts(), 1, "answered at the third try")

	second := newScripted()
	res, err, rec := d.run(t, build(second), 2, `{}`)
	require.NoError(t, err)
	assert.Equal(t, "A small language.", res)
	assert.Empty(t, second.Prompts(), "the answer attempt 1 paid for is replayed")
	assert.Equal(t, int32(2), tools.Load(), "the tool's try that succeeded on attempt 1 is replayed")
	assert.Contains(t, stepLines(rec.Snapshot()), "log: Language model: answer replayed from attempt 1")
	assert.Contains(t, stepLines(rec.Snapshot()), "log: Tool flaky: output replayed from attempt 1")
}
