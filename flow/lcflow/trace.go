package lcflow

import (
	"context"
	"math"

	"github.com/tmc/langchaingo/llms"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/telemetry"
)

// Attribute keys of the spans of steps, tools and model calls. The
// gen_ai ones follow OpenTelemetry's semantic conventions for generative
// AI (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/),
// written here rather than imported from a semconv package.
const (
	attrStep          = attribute.Key("flows.step.name")
	attrOperation     = attribute.Key("gen_ai.operation.name")
	attrProvider      = attribute.Key("gen_ai.provider.name")
	attrTool          = attribute.Key("gen_ai.tool.name")
	attrRequestModel  = attribute.Key("gen_ai.request.model")
	attrRequestStream = attribute.Key("gen_ai.request.stream")
	attrInputTokens   = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens  = attribute.Key("gen_ai.usage.output_tokens")
)

// opChat is the gen_ai.operation.name of a model call: langchaingo's
// GenerateContent sends a list of messages and gets a reply, OpenAI's chat
// completion and its like.
const opChat = "chat"

// noSpan is the span returned where nothing is traced.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts a span named kind+name, a child of the span in ctx, with
// the tracer provider of that span, when that span is recording: inside
// a worker's traced run of a task (see queue.WorkerConfig.TracerProvider)
// every step, tool call and model call is a child span. Anywhere else it
// returns ctx and a span that does nothing, at no cost.
func startSpan(ctx context.Context, kind, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noSpan
	}
	return tracer(parent).Start(ctx, kind+name, trace.WithAttributes(attrs...))
}

// tracer returns the tracer of lcflow's spans under parent.
func tracer(parent trace.Span) trace.Tracer {
	return parent.TracerProvider().Tracer(telemetry.ScopeName + "/flow/lcflow")
}

// startChatSpan starts the span of a model call made with options, as
// startSpan does: a CLIENT span (the model is a service the call goes
// out to), named "chat <model>" when the call options name the model
// (llms.WithModel, chains.WithModel) or info does, and "chat" when
// neither does (the model was chosen when its client was made, which
// langchaingo's llms.Model does not tell), with gen_ai.request.model,
// gen_ai.provider.name when info names the provider and, when the call
// asks for a stream, gen_ai.request.stream. The options are read only
// inside a traced run.
func startChatSpan(ctx context.Context, options []llms.CallOption, info ModelInfo) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noSpan
	}
	var o llms.CallOptions
	for _, opt := range options {
		opt(&o)
	}
	model := o.Model
	if model == "" {
		model = info.Model
	}
	name := opChat
	attrs := make([]attribute.KeyValue, 1, 4)
	attrs[0] = attrOperation.String(opChat)
	if model != "" {
		name += " " + model
		attrs = append(attrs, attrRequestModel.String(model))
	}
	if info.Provider != "" {
		attrs = append(attrs, attrProvider.String(info.Provider))
	}
	if o.StreamingFunc != nil {
		attrs = append(attrs, attrRequestStream.Bool(true))
	}
	return tracer(parent).Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endChatSpan ends the span of a model call as endSpan does, with the
// token counts of its answer (see usage) when it carries them.
func endChatSpan(span trace.Span, resp *llms.ContentResponse, err error) {
	if err == nil && span.IsRecording() {
		in, inOK, out, outOK := usage(resp)
		if inOK {
			span.SetAttributes(attrInputTokens.Int64(in))
		}
		if outOK {
			span.SetAttributes(attrOutputTokens.Int64(out))
		}
	}
	endSpan(span, err)
}

// Keys of the token counts in a choice's GenerationInfo, as langchaingo's
// providers name them: PromptTokens and CompletionTokens (openai, ollama,
// googleai and most others), InputTokens and OutputTokens (anthropic),
// input_tokens and output_tokens (bedrock, googleai).
var (
	inputTokenKeys  = [...]string{"PromptTokens", "InputTokens", "input_tokens"}
	outputTokenKeys = [...]string{"CompletionTokens", "OutputTokens", "output_tokens"}
)

// usage returns the input and output token counts of resp, each with
// whether it carries it: those of its first choice that has any, since
// the providers that report usage put the counts of the whole call in
// every choice (summing them would count the call once per choice).
// Counts of zero for both are none: a provider fills the keys with zeros
// when the server sent no usage (the openai provider, against a
// compatible server that omits it), and no call reads no input.
func usage(resp *llms.ContentResponse) (in int64, inOK bool, out int64, outOK bool) {
	if resp == nil {
		return 0, false, 0, false
	}
	for _, c := range resp.Choices {
		if c == nil || c.GenerationInfo == nil {
			continue
		}
		in, inOK = count(c.GenerationInfo, inputTokenKeys[:])
		out, outOK = count(c.GenerationInfo, outputTokenKeys[:])
		if inOK && outOK && in == 0 && out == 0 {
			return 0, false, 0, false
		}
		if inOK || outOK {
			return in, inOK, out, outOK
		}
	}
	return 0, false, 0, false
}

// count returns the value of the first of keys that info holds as a
// whole number of tokens (any Go integer type, or a whole float64 as JSON
// decodes it), and whether there was one.
func count(info map[string]any, keys []string) (int64, bool) {
	for _, k := range keys {
		var n int64
		switch v := info[k].(type) {
		case int:
			n = int64(v)
		case int32:
			n = int64(v)
		case int64:
			n = v
		case uint32:
			n = int64(v)
		case uint64:
			if v > math.MaxInt64 {
				continue
			}
			n = int64(v)
		case float64:
			if v != math.Trunc(v) || v < 0 || v > math.MaxInt64 {
				continue
			}
			n = int64(v)
		default:
			continue
		}
		if n >= 0 {
			return n, true
		}
	}
	return 0, false
}

// endSpan ends span, with err as its error if it is not nil: its text
// redacted (see redact.Error), as the errors of HTTP clients quote URLs
// that may carry a key.
func endSpan(span trace.Span, err error) {
	if err != nil {
		err = redact.Error(err)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// endUnlessEnded, deferred as a span is started, ends the span of a call
// that did not return, with an error status: one that panicked (the
// worker fails the task; the panic goes on, unrecovered here) or ended
// its goroutine. *ended is set once the call has returned and endSpan
// has ended the span. Without it the span would stay open, never
// exported, and its trace would lack the step or call that failed.
func endUnlessEnded(span trace.Span, ended *bool) {
	if !*ended {
		span.SetStatus(codes.Error, "panicked or did not return")
		span.End()
	}
}
