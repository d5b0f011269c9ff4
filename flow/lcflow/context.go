package lcflow

import (
	"context"

	"github.com/tmc/langchaingo/callbacks"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/schema"
)

type ctxKey int

const (
	handlerKey ctxKey = iota
	stepKey
	quietKey
	toolReportedKey
	modelReportedKey
)

// WithHandler returns a context carrying h, where Step, Tool, Model and
// Callbacks find the handler of the running task. Flow.Run does this; call
// it yourself only to run a chain with reporting outside a Flow.
func WithHandler(ctx context.Context, h *Handler) context.Context {
	return context.WithValue(ctx, handlerKey, h)
}

// HandlerFromContext returns the Handler carried by ctx, or nil. The
// methods of a nil *Handler do nothing, so the result can be used without
// a check.
func HandlerFromContext(ctx context.Context) *Handler {
	h, _ := ctx.Value(handlerKey).(*Handler)
	return h
}

type stepInfo struct {
	name  string
	quiet bool
}

func withStep(ctx context.Context, name string, quiet bool) context.Context {
	return context.WithValue(ctx, stepKey, stepInfo{name: name, quiet: quiet})
}

// StepFromContext returns the name of the innermost named step running in
// ctx, or "" outside any step.
func StepFromContext(ctx context.Context) string { return stepFromContext(ctx) }

func stepFromContext(ctx context.Context) string {
	s, _ := ctx.Value(stepKey).(stepInfo)
	return s.name
}

func quietFromContext(ctx context.Context) bool {
	s, _ := ctx.Value(stepKey).(stepInfo)
	return s.quiet
}

// markToolReported tells the handler that a Tool wrapper reports this tool
// call, so that the tool's own callbacks are not reported twice.
func markToolReported(ctx context.Context) context.Context {
	return context.WithValue(ctx, toolReportedKey, true)
}

func toolReported(ctx context.Context) bool {
	b, _ := ctx.Value(toolReportedKey).(bool)
	return b
}

// markModelReported tells the handler that a Model wrapper reports this
// model call, so that the model's own callbacks are not reported twice.
func markModelReported(ctx context.Context) context.Context {
	return context.WithValue(ctx, modelReportedKey, true)
}

func modelReported(ctx context.Context) bool {
	b, _ := ctx.Value(modelReportedKey).(bool)
	return b
}

// Callbacks is a callbacks.Handler for the langchaingo components that take
// a handler when they are built, once, and are then shared by every task:
// agents (agents.WithCallbacksHandler), executors, providers
// (openai.WithCallback, or the CallbacksHandler field of googleai, ollama
// and others) and tools (tools.Calculator{CallbacksHandler: ...}). It holds
// no state: each call goes to the Handler of the task whose context it
// receives, and does nothing outside a task.
var Callbacks callbacks.Handler = contextHandler{}

type contextHandler struct{}

func (contextHandler) HandleText(ctx context.Context, text string) {
	HandlerFromContext(ctx).HandleText(ctx, text)
}

func (contextHandler) HandleLLMStart(ctx context.Context, prompts []string) {
	HandlerFromContext(ctx).HandleLLMStart(ctx, prompts)
}

func (contextHandler) HandleLLMGenerateContentStart(ctx context.Context, ms []llms.MessageContent) {
	HandlerFromContext(ctx).HandleLLMGenerateContentStart(ctx, ms)
}

func (contextHandler) HandleLLMGenerateContentEnd(ctx context.Context, res *llms.ContentResponse) {
	HandlerFromContext(ctx).HandleLLMGenerateContentEnd(ctx, res)
}

func (contextHandler) HandleLLMError(ctx context.Context, err error) {
	HandlerFromContext(ctx).HandleLLMError(ctx, err)
}

func (contextHandler) HandleChainStart(ctx context.Context, inputs map[string]any) {
	HandlerFromContext(ctx).HandleChainStart(ctx, inputs)
}

func (contextHandler) HandleChainEnd(ctx context.Context, outputs map[string]any) {
	HandlerFromContext(ctx).HandleChainEnd(ctx, outputs)
}

func (contextHandler) HandleChainError(ctx context.Context, err error) {
	HandlerFromContext(ctx).HandleChainError(ctx, err)
}

func (contextHandler) HandleToolStart(ctx context.Context, input string) {
	HandlerFromContext(ctx).HandleToolStart(ctx, input)
}

func (contextHandler) HandleToolEnd(ctx context.Context, output string) {
	HandlerFromContext(ctx).HandleToolEnd(ctx, output)
}

func (contextHandler) HandleToolError(ctx context.Context, err error) {
	HandlerFromContext(ctx).HandleToolError(ctx, err)
}

func (contextHandler) HandleAgentAction(ctx context.Context, action schema.AgentAction) {
	HandlerFromContext(ctx).HandleAgentAction(ctx, action)
}

func (contextHandler) HandleAgentFinish(ctx context.Context, finish schema.AgentFinish) {
	HandlerFromContext(ctx).HandleAgentFinish(ctx, finish)
}

func (contextHandler) HandleRetrieverStart(ctx context.Context, query string) {
	HandlerFromContext(ctx).HandleRetrieverStart(ctx, query)
}

func (contextHandler) HandleRetrieverEnd(ctx context.Context, query string, documents []schema.Document) {
	HandlerFromContext(ctx).HandleRetrieverEnd(ctx, query, documents)
}

func (contextHandler) HandleStreamingFunc(ctx context.Context, chunk []byte) {
	HandlerFromContext(ctx).HandleStreamingFunc(ctx, chunk)
}
