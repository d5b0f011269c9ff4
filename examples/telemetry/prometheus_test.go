package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// scrape serves reader as /metrics does and returns the body.
func scrape(t *testing.T, reader *sdkmetric.ManualReader) string {
	t.Helper()
	srv := httptest.NewServer(metricsHandler(reader))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/plain; version=0.0.4; charset=utf-8", resp.Header.Get("Content-Type"))
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// TestMetricsInPrometheusTextFormat: each kind of instrument the library
// uses is written as Prometheus' text format expects it, with its unit
// and counter suffixes, its scope, escaped label values, and the
// resource as target_info.
func TestMetricsInPrometheusTextFormat(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", "flows-test"))))
	defer mp.Shutdown(ctx)
	m := mp.Meter("github.com/flowsrun/flows/queue", metric.WithInstrumentationVersion("v1"))

	ended, err := m.Int64Counter("flows.tasks.ended", metric.WithUnit("{task}"), metric.WithDescription("Tasks that ended.\nBy state."))
	require.NoError(t, err)
	ended.Add(ctx, 3, metric.WithAttributes(attribute.String("flows.flow", `say "hi"\now`), attribute.String("flows.task.state", "SUCCESS")))

	_, err = m.Int64ObservableCounter("flows.events.published", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(7, metric.WithAttributes(attribute.String("flows.event.type", "step")))
		return nil
	}))
	require.NoError(t, err)

	streams, err := m.Int64UpDownCounter("flows.sse.streams", metric.WithUnit("{stream}"))
	require.NoError(t, err)
	streams.Add(ctx, 2)
	streams.Add(ctx, -1)

	_, err = m.Int64ObservableGauge("flows.queue.depth", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(4, metric.WithAttributes(attribute.String("flows.queue.state", "ready")))
		return nil
	}))
	require.NoError(t, err)

	duration, err := m.Float64Histogram("flows.task.run.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.1, 1, 10))
	require.NoError(t, err)
	for _, v := range []float64{0.05, 0.5, 0.7, 20} {
		duration.Record(ctx, v, metric.WithAttributes(attribute.String("flows.run.outcome", "success")))
	}

	// The same name from another scope joins the family.
	other, err := mp.Meter("github.com/flowsrun/flows/ssehttp").Int64Counter("flows.tasks.ended", metric.WithUnit("{task}"))
	require.NoError(t, err)
	other.Add(ctx, 1)

	body := scrape(t, reader)
	scope := `otel_scope_name="github.com/flowsrun/flows/queue",otel_scope_version="v1"`
	for _, want := range []string{
		"# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{service_name=\"flows-test\"} 1\n",
		"# HELP flows_tasks_ended_total Tasks that ended.\\nBy state.\n# TYPE flows_tasks_ended_total counter\n" +
			`flows_tasks_ended_total{flows_flow="say \"hi\"\\now",flows_task_state="SUCCESS",` + scope + "} 3\n" +
			`flows_tasks_ended_total{otel_scope_name="github.com/flowsrun/flows/ssehttp"} 1` + "\n",
		"# TYPE flows_events_published_total counter\n" +
			`flows_events_published_total{flows_event_type="step",` + scope + "} 7\n",
		"# TYPE flows_sse_streams gauge\n" + `flows_sse_streams{` + scope + "} 1\n",
		"# TYPE flows_queue_depth gauge\n" + `flows_queue_depth{flows_queue_state="ready",` + scope + "} 4\n",
		"# TYPE flows_task_run_duration_seconds histogram\n" +
			`flows_task_run_duration_seconds_bucket{flows_run_outcome="success",` + scope + `,le="0.1"} 1` + "\n" +
			`flows_task_run_duration_seconds_bucket{flows_run_outcome="success",` + scope + `,le="1"} 3` + "\n" +
			`flows_task_run_duration_seconds_bucket{flows_run_outcome="success",` + scope + `,le="10"} 3` + "\n" +
			`flows_task_run_duration_seconds_bucket{flows_run_outcome="success",` + scope + `,le="+Inf"} 4` + "\n" +
			`flows_task_run_duration_seconds_sum{flows_run_outcome="success",` + scope + "} 21.25\n" +
			`flows_task_run_duration_seconds_count{flows_run_outcome="success",` + scope + "} 4\n",
	} {
		assert.Contains(t, body, want)
	}
	assert.Equal(t, 1, strings.Count(body, "# TYPE flows_tasks_ended_total "), "one family:\n%s", body)
}

// TestPromNames: names and label names are made valid, and a unit's
// suffix is added once.
func TestPromNames(t *testing.T) {
	assert.Equal(t, "flows_task_pickup_latency_seconds", promName("flows.task.pickup.latency", "s"))
	assert.Equal(t, "http_request_duration_seconds", promName("http.request.duration_seconds", "s"))
	assert.Equal(t, "payload_bytes", promName("payload", "By"))
	assert.Equal(t, "flows_sse_streams", promName("flows.sse.streams", "{stream}"))
	assert.Equal(t, "_1st_try_count", promSanitize("1st-try count"))
	assert.Equal(t, `{a_b="1;2"}`, promLabels([]attribute.KeyValue{attribute.Int("a.b", 1), attribute.Int("a_b", 2)}, nil))
	assert.Equal(t, "", promLabels(nil, nil))
}
