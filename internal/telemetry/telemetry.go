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
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
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

// Tracer is the library's tracer. Its provider is the one given to
// NewTracer or, for nil, the global one as it is at each span: a provider
// installed later (otel.SetTracerProvider) is used from then on. While
// the provider is the global one that nobody has installed, or a no-op
// provider, Active is nil and nothing is traced, at no cost: not even the
// context and the non-recording span that a no-op tracer allocates.
type Tracer struct {
	fixed  trace.Tracer // from the given provider; nil for the global one
	off    bool         // the given provider is a no-op provider
	global atomic.Pointer[globalTracer]
}

// globalTracer is the library's tracer of the global provider tp, nil
// while tp is OpenTelemetry's default no-op provider.
type globalTracer struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
}

// NewTracer returns the library's tracer of tp, nil meaning the global
// provider.
func NewTracer(tp trace.TracerProvider) *Tracer {
	switch tp.(type) {
	case nil:
		return &Tracer{}
	case noop.TracerProvider, *noop.TracerProvider:
		return &Tracer{off: true}
	}
	return &Tracer{fixed: tp.Tracer(ScopeName)}
}

// Active returns the tracer to start spans with, nil when nothing is to
// be traced (see Tracer).
func (t *Tracer) Active() trace.Tracer {
	if t.fixed != nil || t.off {
		return t.fixed
	}
	tp := otel.GetTracerProvider()
	if g := t.global.Load(); g != nil && g.tp == tp {
		return g.tracer
	}
	g := &globalTracer{tp: tp}
	if !isDefault(reflect.TypeOf(tp), "tracerProvider") {
		g.tracer = tp.Tracer(ScopeName)
	}
	if reflect.TypeOf(tp).Comparable() {
		t.global.Store(g)
	}
	return g.tracer
}

// Start starts a span with the active tracer, or returns ctx and a span
// that does nothing when there is none.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	tr := t.Active()
	if tr == nil {
		return ctx, NoSpan
	}
	return tr.Start(ctx, name, opts...)
}

// NoSpan is the span of what is not traced: it does nothing.
var NoSpan = trace.SpanFromContext(context.Background())

// isDefault reports whether t, the type of a global provider, is that of
// the provider otel.GetTracerProvider or otel.GetMeterProvider returns
// until a program installs one: OpenTelemetry's internal delegating
// provider (name is its type's name), which records nothing. Once a
// provider is installed, they return that one instead.
func isDefault(t reflect.Type, name string) bool {
	return t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" &&
		t.Elem().Name() == name
}

// Metrics is the library's meter. Its provider is the one given to
// NewMetrics or, for nil, the global one (whose instruments pass on to a
// provider installed later). While the provider is the global one that
// nobody has installed, or a no-op provider, Active is false and the
// library measures nothing at all: not even the atomic counts of its
// Counters.
type Metrics struct {
	Meter  metric.Meter
	fixed  bool // the given provider is a real one
	off    bool // the given provider is a no-op provider
	global atomic.Pointer[globalMeter]
}

// globalMeter says whether the global provider mp is a real one.
type globalMeter struct {
	mp     metric.MeterProvider
	active bool
}

// NewMetrics returns the library's meter of mp, nil meaning the global
// provider.
func NewMetrics(mp metric.MeterProvider) *Metrics {
	switch mp.(type) {
	case nil:
		return &Metrics{Meter: otel.GetMeterProvider().Meter(ScopeName)}
	case metricnoop.MeterProvider, *metricnoop.MeterProvider:
		return &Metrics{Meter: mp.Meter(ScopeName), off: true}
	}
	return &Metrics{Meter: mp.Meter(ScopeName), fixed: true}
}

// Active reports whether measurements are to be made (see Metrics).
func (m *Metrics) Active() bool {
	if m.fixed || m.off {
		return m.fixed
	}
	mp := otel.GetMeterProvider()
	if g := m.global.Load(); g != nil && g.mp == mp {
		return g.active
	}
	g := &globalMeter{mp: mp, active: !isDefault(reflect.TypeOf(mp), "meterProvider")}
	if reflect.TypeOf(mp).Comparable() {
		m.global.Store(g)
	}
	return g.active
}

// Span start options made once, so that starting a span does not box
// them each time.
var (
	KindProducer = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	KindConsumer = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	KindInternal = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// Options are the measurement options of one attribute set, made once:
// pass Record to a histogram's Record.
type Options struct {
	Record []metric.RecordOption
}

// NewOptions returns the options of the attribute set of attrs.
func NewOptions(attrs ...attribute.KeyValue) *Options {
	return &Options{Record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}}
}

// MaxOptions is the Max of an OptionCache keyed by what comes from tasks
// (flow names), which a backend may hold any number of.
const MaxOptions = 1024

// OptionCache keeps the Options of each key K, made by New on first use.
type OptionCache[K comparable] = Cache[K, *Options]

// Cache keeps a value V for each key K, made by New on first use, at
// most Max of them (0: no limit; past it, Get makes a value for each
// call). Reading is lock-free: the map is replaced, never changed, when
// a key is added. The zero value is not usable: set New.
type Cache[K comparable, V any] struct {
	New func(K) V
	Max int

	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// Get returns the value of k.
func (c *Cache[K, V]) Get(k K) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	var n int
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
		n = len(*old)
		if c.Max > 0 && n >= c.Max {
			return c.New(k)
		}
	}
	v := c.New(k)
	m := make(map[K]V, n+1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[k] = v
	c.m.Store(&m)
	return v
}

// All calls f with each value kept.
func (c *Cache[K, V]) All(f func(V)) {
	if m := c.m.Load(); m != nil {
		for _, v := range *m {
			f(v)
		}
	}
}

// Counter is a monotonic counter kept as atomic integers, one for each
// attribute set, and reported by an observable counter at each
// collection: counting costs an atomic add, where a synchronous counter of
// the SDK normalises and looks its attribute set up at each Add. Counters
// of one name on one meter add up (the SDK sums what callbacks observe).
// An attribute set is reported once it has been counted: a Cell taken
// ahead of its first Add reports nothing until then.
type Counter[K comparable] struct {
	on    *Metrics
	inst  metric.Int64ObservableCounter
	cells Cache[K, *Cell]
}

// Cell is the count of one attribute set of a Counter. A caller that
// counts the same set often (a flow's runs) keeps its Cell, so that
// counting is an atomic add with no lookup; it checks that the meter is
// active itself (Metrics.Active).
type Cell struct {
	n   atomic.Int64
	opt metric.ObserveOption
}

// Add adds n, which must not be negative, to the count.
func (c *Cell) Add(n int64) { c.n.Add(n) }

// NewCounter makes the counter name of ms's meter, whose attributes for a key K
// are attrs(K). An error of the meter (an SDK returns one for a name or
// option it refuses) is logged to log; the counter then counts in vain.
func NewCounter[K comparable](ms *Metrics, log *slog.Logger, name, unit, desc string, attrs func(K) []attribute.KeyValue) *Counter[K] {
	m := ms.Meter
	c := &Counter[K]{on: ms}
	c.cells.New = func(k K) *Cell {
		return &Cell{opt: metric.WithAttributeSet(attribute.NewSet(attrs(k)...))}
	}
	inst, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	if err == nil {
		_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			c.cells.All(func(cl *Cell) {
				if n := cl.n.Load(); n != 0 {
					o.ObserveInt64(inst, n, cl.opt)
				}
			})
			return nil
		}, inst)
	}
	if err != nil {
		log.Warn("flows: making a metric instrument failed", "instrument", name, "err", err)
	}
	c.inst = inst
	return c
}

// Add adds n to the count of k, if the meter is active.
func (c *Counter[K]) Add(k K, n int64) {
	if c.on.Active() {
		c.cells.Get(k).n.Add(n)
	}
}

// Cell returns the count of k, to Add to without a lookup.
func (c *Counter[K]) Cell(k K) *Cell { return c.cells.Get(k) }
