package ssehttp

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/internal/telemetry"
)

// Names of the Handler's span and instrument.
const (
	spanStartTask = "flows.start_task"
	metricStreams = "flows.sse.streams"
)

var kindServer = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// handlerTelemetry is what a Handler traces and measures.
type handlerTelemetry struct {
	tracer  *telemetry.Tracer
	metrics *telemetry.Metrics
	streams metric.Int64UpDownCounter
}

func newHandlerTelemetry(cfg Config) *handlerTelemetry {
	ms := telemetry.NewMetrics(cfg.MeterProvider)
	m := ms.Meter
	streams, err := m.Int64UpDownCounter(metricStreams, metric.WithUnit("{stream}"),
		metric.WithDescription("Task-status event streams open."))
	if err != nil {
		cfg.Logger.Warn("flows: making a metric instrument failed", "instrument", metricStreams, "err", err)
	}
	if streams == nil {
		streams, _ = noop.Meter{}.Int64UpDownCounter(metricStreams)
	}
	return &handlerTelemetry{tracer: telemetry.NewTracer(cfg.TracerProvider), metrics: ms, streams: streams}
}

// startSpan starts the span of a start-task request: a child of the
// request's span when the host traces its requests (otelhttp, say), else
// a server span continuing the trace named by the request's W3C
// traceparent and tracestate headers, if any.
func (t *handlerTelemetry) startSpan(r *http.Request) (context.Context, trace.Span) {
	ctx := r.Context()
	tr := t.tracer.Active()
	traced := trace.SpanContextFromContext(ctx).IsValid()
	if !traced {
		ctx = telemetry.Extract(ctx, r.Header.Get("traceparent"), r.Header.Get("tracestate"))
	}
	if tr == nil {
		// Nothing traces here: the request's own trace, if any, is
		// still handed on to the task.
		return ctx, telemetry.NoSpan
	}
	if traced {
		return tr.Start(ctx, spanStartTask, telemetry.KindInternal...)
	}
	return tr.Start(ctx, spanStartTask, kindServer...)
}

// statusWriter notes the status of an answer, for the span of the
// request.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

// end ends span with the answer's status: an error for a 5xx.
func (w *statusWriter) end(span trace.Span) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
