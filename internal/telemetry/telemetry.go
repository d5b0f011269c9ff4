// Package telemetry holds what the flows packages share for OpenTelemetry:
// the instrumentation scope, the attribute keys, the W3C trace context
// that travels inside a task, and a cache of measurement options so that
// recording a measurement allocates nothing.
//
// Only the OpenTelemetry API is used here. Without a provider installed
// (neither in a config field nor as the global one), every span and
// measurement is a no-op.
package telemetry

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every tracer and meter of
// the library.
const ScopeName = "github.com/flowsrun/flows"

// Attribute keys of spans and measurements.
const (
	Flow      = attribute.Key("flows.flow")
	TaskID    = attribute.Key("flows.task.id")
	Attempt   = attribute.Key("flows.task.attempt")
	State     = attribute.Key("flows.task.state")
	Outcome   = attribute.Key("flows.run.outcome")
	Worker    = attribute.Key("flows.worker")
	EventType = attribute.Key("flows.event.type")
	Where     = attribute.Key("flows.queue.state")
)

// Tracer returns the library's tracer from tp, or from the global
// provider when tp is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// Meter returns the library's meter from mp, or from the global provider
// when mp is nil.
func Meter(mp metric.MeterProvider) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(ScopeName)
}

// Span start options made once, so that starting a span does not box
// them each time.
var (
	KindProducer = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	KindConsumer = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	KindInternal = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// W3C Trace Context header names, as a task stores them.
const (
	headerParent = "traceparent"
	headerState  = "tracestate"
)

// carrier holds a traceparent and a tracestate for propagation.TraceContext.
type carrier struct{ parent, state string }

func (c *carrier) Get(key string) string {
	switch key {
	case headerParent:
		return c.parent
	case headerState:
		return c.state
	}
	return ""
}

func (c *carrier) Set(key, value string) {
	switch key {
	case headerParent:
		c.parent = value
	case headerState:
		c.state = value
	}
}

func (c *carrier) Keys() []string { return []string{headerParent, headerState} }

var w3c propagation.TraceContext

// Inject returns the W3C traceparent and tracestate of the span in ctx,
// "" and "" when ctx has no valid span context.
func Inject(ctx context.Context) (parent, state string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	var c carrier
	w3c.Inject(ctx, &c)
	return c.parent, c.state
}

// Extract returns ctx with the remote span context that parent and state
// name, or ctx itself when parent is empty or malformed.
func Extract(ctx context.Context, parent, state string) context.Context {
	if parent == "" {
		return ctx
	}
	return w3c.Extract(ctx, &carrier{parent: parent, state: state})
}

// SpanContext returns the span context that parent and state name,
// invalid when parent is empty or malformed.
func SpanContext(parent, state string) trace.SpanContext {
	if parent == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(Extract(context.Background(), parent, state))
}

// Options are the measurement options of one attribute set, made once:
// pass Add to a counter's Add and Record to a histogram's Record.
type Options struct {
	Add    []metric.AddOption
	Record []metric.RecordOption
}

// NewOptions returns the options of the attribute set of attrs.
func NewOptions(attrs ...attribute.KeyValue) *Options {
	o := metric.WithAttributeSet(attribute.NewSet(attrs...))
	return &Options{Add: []metric.AddOption{o}, Record: []metric.RecordOption{o}}
}

// maxCached bounds an OptionCache: past it, options are made for each
// call (flow names come from the tasks, and a backend may hold any).
const maxCached = 1024

// OptionCache keeps the Options of each key K, made by New on first use.
// Reading is lock-free: the map is replaced, never changed, when a key
// is added. The zero value is not usable: set New.
type OptionCache[K comparable] struct {
	New func(K) *Options

	mu sync.Mutex
	m  atomic.Pointer[map[K]*Options]
}

// Get returns the options of k.
func (c *OptionCache[K]) Get(k K) *Options {
	if m := c.m.Load(); m != nil {
		if o, ok := (*m)[k]; ok {
			return o
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if o, ok := (*old)[k]; ok {
			return o
		}
		if len(*old) >= maxCached {
			return c.New(k)
		}
	}
	o := c.New(k)
	m := make(map[K]*Options, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[k] = o
	c.m.Store(&m)
	return o
}

func lenOf[K comparable](m *map[K]*Options) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
