package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
)

// TestMeterProviderExemplars checks that the examples' meter provider
// keeps no exemplar unless OTEL_METRICS_EXEMPLAR_FILTER asks for them,
// and honours the variable when it is set.
func TestMeterProviderExemplars(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want int // exemplars of one measurement in a sampled trace
	}{
		{"", 0},
		{"always_off", 0},
		{"trace_based", 1},
	} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(envExemplarFilter, tc.env)
			reader := sdkmetric.NewManualReader()
			mp := newMeterProvider(reader, resource.Empty())
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			h, err := mp.Meter("test").Float64Histogram("flows.task.run.duration", metric.WithUnit("s"))
			require.NoError(t, err)

			sc := trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    trace.TraceID{1},
				SpanID:     trace.SpanID{2},
				TraceFlags: trace.FlagsSampled,
			})
			h.Record(trace.ContextWithSpanContext(context.Background(), sc), 0.5)

			var rm metricdata.ResourceMetrics
			require.NoError(t, reader.Collect(context.Background(), &rm))
			require.Len(t, rm.ScopeMetrics, 1)
			require.Len(t, rm.ScopeMetrics[0].Metrics, 1)
			hist, ok := rm.ScopeMetrics[0].Metrics[0].Data.(metricdata.Histogram[float64])
			require.True(t, ok)
			require.Len(t, hist.DataPoints, 1)
			assert.Len(t, hist.DataPoints[0].Exemplars, tc.want)
		})
	}
}
