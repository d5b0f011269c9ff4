package queue_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// TestEnqueueTraceContext: without a tracer provider installed, a task
// carries no trace context, unless it is enqueued inside a trace someone
// else started (a traceparent header read by the host, say): then it
// carries that trace's context as it came, as W3C propagation asks.
func TestEnqueueTraceContext(t *testing.T) {
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)
	tid, err := trace.TraceIDFromHex(traceID)
	require.NoError(t, err)
	sid, err := trace.SpanIDFromHex(spanID)
	require.NoError(t, err)
	state, err := trace.ParseTraceState("vendor=value")
	require.NoError(t, err)
	remote := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: state, Remote: true,
	}))
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		parent, st string
	}{
		{"outside a trace", context.Background(), "", ""},
		{"inside a remote trace", remote, "00-" + traceID + "-" + spanID + "-01", "vendor=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := queue.NewMemory(queue.MemoryConfig{})
			b := queue.NewBroker(mem, progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{Registry: flowsNamed("f")})
			id, err := b.Enqueue(tc.ctx, "f", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			task, err := mem.Get(context.Background(), id)
			require.NoError(t, err)
			assert.Equal(t, tc.parent, task.TraceParent)
			assert.Equal(t, tc.st, task.TraceState)
		})
	}
}
