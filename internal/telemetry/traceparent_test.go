package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// w3cSpanContext is what OpenTelemetry's W3C propagator reads from
// parent and state.
func w3cSpanContext(parent, state string) trace.SpanContext {
	c := propagation.MapCarrier{"traceparent": parent, "tracestate": state}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
}

const (
	validParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	zeroTrace   = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
	zeroSpan    = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"
)

// parentCases are traceparent and tracestate values, good and bad.
var parentCases = []struct{ parent, state string }{
	{validParent, ""},
	{validParent, "vendor=value,other=x"},
	{validParent, "not a state"},
	{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", ""}, // version 00 has no such flag
	{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", ""}, // a later version may
	{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", ""},
	{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01more", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", ""},
	{"fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
	{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
	{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", ""},
	{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", ""},
	{"00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01", ""},
	{zeroTrace, ""},
	{zeroSpan, ""},
	{"", "vendor=value"},
	{"00", ""},
}

// TestParseMatchesTheW3CPropagator: SpanContext reads what
// OpenTelemetry's W3C propagator reads, and refuses what it refuses.
func TestParseMatchesTheW3CPropagator(t *testing.T) {
	for _, c := range parentCases {
		want := w3cSpanContext(c.parent, c.state)
		got := SpanContext(c.parent, c.state)
		assert.Equal(t, want, got, "traceparent %q tracestate %q", c.parent, c.state)
		assert.Equal(t, want.IsValid(), trace.SpanContextFromContext(Extract(context.Background(), c.parent, c.state)).IsValid())
	}
	sc := SpanContext(validParent, "vendor=value")
	require.True(t, sc.IsValid())
	assert.True(t, sc.IsRemote())
	assert.True(t, sc.IsSampled())
	assert.Equal(t, "vendor=value", sc.TraceState().String())
}

// TestInjectMatchesTheW3CPropagator: Inject writes what OpenTelemetry's
// W3C propagator writes, and what Extract reads back.
func TestInjectMatchesTheW3CPropagator(t *testing.T) {
	for _, c := range parentCases {
		sc := w3cSpanContext(c.parent, c.state)
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		want := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, want)
		parent, state := Inject(ctx)
		assert.Equal(t, want["traceparent"], parent, "from %q", c.parent)
		assert.Equal(t, want["tracestate"], state, "from %q", c.parent)
		if sc.IsValid() {
			assert.Equal(t, sc, SpanContext(parent, state), "round trip of %q", c.parent)
		}
	}
	parent, state := Inject(context.Background())
	assert.Empty(t, parent+state, "nothing outside a trace")
}

// FuzzSpanContext: whatever a request's headers or a task's record hold,
// SpanContext reads it as the W3C propagator does.
func FuzzSpanContext(f *testing.F) {
	for _, c := range parentCases {
		f.Add(c.parent, c.state)
	}
	f.Fuzz(func(t *testing.T, parent, state string) {
		want := w3cSpanContext(parent, state)
		got := SpanContext(parent, state)
		if !want.Equal(got) || want.TraceState().String() != got.TraceState().String() {
			t.Fatalf("traceparent %q tracestate %q: got %v, the propagator %v", parent, state, got, want)
		}
	})
}

// TestUnsampled: Unsampled says of a traceparent the propagator reads
// what its sampled flag says, and is false for what has not the shape of
// one.
func TestUnsampled(t *testing.T) {
	for _, c := range parentCases {
		if sc := w3cSpanContext(c.parent, c.state); sc.IsValid() {
			assert.Equal(t, !sc.IsSampled(), Unsampled(c.parent), "traceparent %q", c.parent)
		}
	}
	for _, bad := range []string{"", "00", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"} {
		assert.False(t, Unsampled(bad), "traceparent %q", bad)
	}
	assert.True(t, Unsampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"), "random, not sampled")
}

// TestFormatEveryByte: Format writes every byte of the ids as the W3C
// propagator does, whatever its place in them, with each flag value.
func TestFormatEveryByte(t *testing.T) {
	for b := range 256 {
		var cfg trace.SpanContextConfig
		for i := range cfg.TraceID {
			cfg.TraceID[i] = byte(b + 37*i)
		}
		for i := range cfg.SpanID {
			cfg.SpanID[i] = byte(b + 101*i)
		}
		cfg.TraceFlags = trace.TraceFlags(b)
		sc := trace.NewSpanContext(cfg)
		want := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), want)
		require.Equal(t, want["traceparent"], Format(sc), "byte %#x", b)
	}
}
