package lcflow

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/telemetry"
)

// Attribute keys of the spans of steps, tools and model calls. The
// gen_ai ones follow OpenTelemetry's semantic conventions for generative
// AI.
const (
	attrStep      = attribute.Key("flows.step.name")
	attrOperation = attribute.Key("gen_ai.operation.name")
	attrTool      = attribute.Key("gen_ai.tool.name")
)

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
	ctx, span := parent.TracerProvider().Tracer(telemetry.ScopeName+"/flow/lcflow").Start(ctx, kind+name)
	span.SetAttributes(attrs...)
	return ctx, span
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
