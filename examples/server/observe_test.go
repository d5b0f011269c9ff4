package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/pghistory/pgtest"
	"github.com/flowsrun/flows/progress"
)

// TestServerServesMetrics: GET /metrics answers the Prometheus text
// format, with the metrics of the broker, the workers and the handler.
func TestServerServesMetrics(t *testing.T) {
	srv := startServer(t, testConfig())
	assertPoemOverSSE(t, srv)

	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get(srv.URL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		body = string(b)
		// The run's duration is recorded once the task is acknowledged,
		// a moment after the stream saw it end.
		return strings.Contains(body, `flows_task_run_duration_seconds_count{flows_flow="poem_flow",flows_run_outcome="success"`)
	}, 10*time.Second, 20*time.Millisecond, "metrics:\n%s", body)
	for _, want := range []string{
		`flows_tasks_enqueued_total{flows_flow="poem_flow"`,
		`flows_tasks_started_total{flows_flow="poem_flow"`,
		`flows_tasks_ended_total{flows_flow="poem_flow",flows_task_state="SUCCESS"`,
		`flows_task_pickup_latency_seconds_bucket{flows_flow="poem_flow"`,
		`flows_events_published_total{flows_event_type="step"`,
		`flows_queue_depth{flows_queue_state="ready"`,
		`flows_sse_streams`,
	} {
		assert.Contains(t, body, want)
	}
}

// otlpCollector is a stand-in for an OpenTelemetry collector's OTLP/HTTP
// trace endpoint, JSON encoding: it keeps the spans it is sent.
type otlpCollector struct {
	mu    sync.Mutex
	spans []otlpSpan
}

// otlpSpan is what the test reads of a span.
type otlpSpan struct {
	name, traceID, spanID, parentID, service string
	attrs                                    map[string]string // string values only
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "not an OTLP/HTTP JSON trace export", http.StatusBadRequest)
		return
	}
	var req struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []struct {
					Key   string
					Value struct{ StringValue string }
				}
			}
			ScopeSpans []struct {
				Spans []struct {
					Name, TraceID, SpanID, ParentSpanID string
					Attributes                          []struct {
						Key   string
						Value struct{ StringValue string }
					}
				}
			}
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		var service string
		for _, kv := range rs.Resource.Attributes {
			if kv.Key == "service.name" {
				service = kv.Value.StringValue
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				attrs := map[string]string{}
				for _, kv := range s.Attributes {
					attrs[kv.Key] = kv.Value.StringValue
				}
				c.spans = append(c.spans, otlpSpan{name: s.Name, traceID: s.TraceID,
					spanID: s.SpanID, parentID: s.ParentSpanID, service: service, attrs: attrs})
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

// TestServerExportsTraces: with an OTLP endpoint set, the server exports
// each task's trace over OTLP/HTTP: start-task, enqueue, the run and the
// steps of the langchaingo flow, in one trace, flushed at shutdown.
func TestServerExportsTraces(t *testing.T) {
	collector := &otlpCollector{}
	endpoint := httptest.NewServer(collector)
	defer endpoint.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.URL)
	cfg := testConfig()
	cfg.Telemetry.Service, cfg.Telemetry.Tracing = "flows-test", true

	handler, run, err := newServer(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	assertPoemOverSSE(t, srv)
	srv.Close()
	cancel()
	require.NoError(t, <-done, "run flushes the spans as it returns")

	collector.mu.Lock()
	spans := collector.spans
	collector.mu.Unlock()
	byName := map[string][]otlpSpan{}
	for _, s := range spans {
		byName[s.name] = append(byName[s.name], s)
	}
	require.Len(t, byName["flows.start_task"], 1, "spans: %+v", spans)
	start := byName["flows.start_task"][0]
	assert.Equal(t, "flows-test", start.service)
	require.Len(t, byName["flows.enqueue"], 1)
	assert.Equal(t, start.spanID, byName["flows.enqueue"][0].parentID)
	require.Len(t, byName["flows.run"], 1)
	run0 := byName["flows.run"][0]
	assert.Equal(t, byName["flows.enqueue"][0].spanID, run0.parentID)
	var steps int
	for _, s := range spans {
		assert.Equal(t, start.traceID, s.traceID, "span %s of another trace", s.name)
		if strings.HasPrefix(s.name, "step ") {
			steps++
			assert.Equal(t, run0.spanID, s.parentID, "a step is a child of the run")
		}
	}
	assert.GreaterOrEqual(t, steps, 2, "poem_flow's steps")
	// The demo describes the model it picked (lcflow.DescribedModel):
	// here the offline model, labelled as such.
	chats := byName["chat offline"]
	require.NotEmpty(t, chats, "the model calls, named by the model: spans %+v", spans)
	for _, c := range chats {
		assert.Equal(t, "offline", c.attrs["gen_ai.provider.name"])
		assert.Equal(t, "offline", c.attrs["gen_ai.request.model"])
	}
}

// TestServerWritesHistory: with DATABASE_URL set, every task the
// in-process workers end is written to the run history.
func TestServerWritesHistory(t *testing.T) {
	t.Parallel()
	url := pgtest.Start(t).Database(t)
	cfg := testConfig()
	cfg.DatabaseURL = url
	srv := startServer(t, cfg)
	id := assertPoemOverSSE(t, srv)

	ctx := context.Background()
	history, err := pghistory.Open(ctx, url, pghistory.Config{})
	require.NoError(t, err)
	defer history.Close()
	var rec pghistory.Record
	require.Eventually(t, func() bool {
		rec, err = history.Get(ctx, id)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "no history row: %v", err)
	assert.Equal(t, "poem_flow", rec.Flow)
	assert.Equal(t, progress.StateSuccess, rec.State)
	assert.NotEmpty(t, rec.Snapshot.Details.FinalResult)
	assert.Equal(t, 1, rec.Attempts)
}

// TestServerFailsWhenTheDatabaseIsUnreachable: a DATABASE_URL that
// cannot be reached stops the server at start-up.
func TestServerFailsWhenTheDatabaseIsUnreachable(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	url := srv.URL()
	srv.Stop() // nobody listens there now
	cfg := testConfig()
	cfg.DatabaseURL = url
	_, _, err := newServer(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DATABASE_URL")
}
