package lcflow

import (
	"context"
	"fmt"

	"github.com/tmc/langchaingo/llms"
)

// Model wraps m so that each of its calls is reported to the running
// task's Handler: a "Calling the language model" log entry before, a move
// of the progress bar after, the error in the status line on failure. Most
// langchaingo providers report the start of a call to a callbacks handler
// of their own, but each takes it differently and none reports the end;
// the wrapper works the same with every model, including test doubles.
// Callbacks that m makes to its own handler are not reported a second
// time.
//
// Streaming needs no wrapper: Flow.Run asks the chains it runs to stream
// to the Handler.
//
// Inside a Flow each call is a step of the task: its answer is recorded,
// and a later attempt of the task (a retry, or a run after its worker
// died) that makes the same call gets that answer back without calling
// m, and logs "Language model: answer replayed from attempt N" in place
// of the call (see the package documentation, Durable calls). A failed
// call is not recorded.
//
// Inside a traced run each call that reaches m is a CLIENT span "chat
// <model>" with the GenAI attributes langchaingo tells of it: the model
// its call options name, and the token counts of its answer (see the
// package documentation, Tracing). DescribedModel adds what langchaingo
// does not tell: the provider, and the model m's client was made with.
//
// An error of m that is a refusal no retry can fix (a wrong key, an
// unknown model, a request too long: see PermanentIfRefused) comes out
// wrapping flow.ErrPermanent, inside a task or not, so that the task
// fails at once even when the chain around the model is run by code of
// your own.
func Model(m llms.Model) llms.Model {
	if m == nil {
		panic("lcflow.Model: nil model")
	}
	if rm, ok := m.(reportingModel); ok {
		return rm
	}
	return reportingModel{m: m}
}

// ModelInfo says what a model calls, for the spans of its calls:
// langchaingo's llms.Model tells neither its provider nor the model its
// client was made with.
type ModelInfo struct {
	// Provider is the span's gen_ai.provider.name: one of the values
	// OpenTelemetry's GenAI conventions list where one fits ("openai",
	// "anthropic", "gcp.gemini", "aws.bedrock", "mistral_ai", ...),
	// otherwise a name of your own in lower case ("ollama"). For an
	// OpenAI-compatible server, the provider behind it when you know it.
	// Empty leaves the attribute out.
	Provider string
	// Model is the model m's client was made with (openai.WithModel and
	// its like): the span's gen_ai.request.model and the model in its
	// name, when the call's options name none. A model the call options
	// name (llms.WithModel, chains.WithModel) takes its place.
	Model string
}

// DescribedModel is Model(m) whose calls' spans also carry info: the
// provider as gen_ai.provider.name, and info.Model as the model of each
// call whose options name none. Describing a model that Model or
// DescribedModel already wrapped replaces its info. Outside a traced run
// info costs nothing.
func DescribedModel(m llms.Model, info ModelInfo) llms.Model {
	if m == nil {
		panic("lcflow.DescribedModel: nil model")
	}
	if rm, ok := m.(reportingModel); ok {
		m = rm.m
	}
	return reportingModel{m: m, info: info}
}

// reportingModel is the model Model and DescribedModel return.
type reportingModel struct {
	m    llms.Model
	info ModelInfo
}

func (r reportingModel) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	h := HandlerFromContext(ctx)
	if h == nil || modelReported(ctx) {
		resp, err := r.m.GenerateContent(ctx, messages, options...)
		return resp, PermanentIfRefused(err)
	}
	key := h.modelKey(ctx, messages, options)
	var recorded llms.ContentResponse
	from, ok, err := h.replayed(ctx, key, &recorded)
	if err != nil {
		h.releaseKey(key)
		return nil, fmt.Errorf("lcflow: model call: %w", err)
	}
	if ok {
		h.llmReplayed(from)
		return &recorded, nil
	}
	h.llmStarted()
	ctx, span := startChatSpan(ctx, options, r.info)
	ended := false
	defer endUnlessEnded(span, &ended)
	resp, err := r.m.GenerateContent(markModelReported(ctx), messages, options...)
	endChatSpan(span, resp, err)
	ended = true
	if err != nil {
		h.releaseKey(key) // a try again in this run takes its place
		h.r.Status("Language model failed: " + err.Error())
		return resp, PermanentIfRefused(err)
	}
	h.llmEnded()
	h.recordModel(ctx, key, resp)
	return resp, nil
}

func (r reportingModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, r, prompt, options...)
}
