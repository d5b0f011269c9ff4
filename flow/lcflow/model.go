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
// package documentation, Tracing).
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

type reportingModel struct{ m llms.Model }

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
	ctx, span := startChatSpan(ctx, options)
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
