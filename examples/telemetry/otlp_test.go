package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// collector is an OTLP/HTTP endpoint that keeps each request and answers
// with the statuses it is given in turn (then 200).
type collector struct {
	mu       sync.Mutex
	requests []collected
	replies  []reply
}

type collected struct {
	path    string
	header  http.Header
	body    []byte // decompressed
	rawBody []byte
}

type reply struct {
	status     int
	retryAfter string
	body       string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	body := raw
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, _ = io.ReadAll(zr)
	}
	c.mu.Lock()
	c.requests = append(c.requests, collected{path: r.URL.Path, header: r.Header.Clone(), body: body, rawBody: raw})
	rep := reply{status: http.StatusOK, body: "{}"}
	if len(c.replies) > 0 {
		rep, c.replies = c.replies[0], c.replies[1:]
	}
	c.mu.Unlock()
	if rep.retryAfter != "" {
		w.Header().Set("Retry-After", rep.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (c *collector) got() []collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]collected(nil), c.requests...)
}

// startCollector serves c and returns an exporter posting to it, with
// retries that wait a millisecond.
func startCollector(t *testing.T, c *collector, cfg otlpConfig) *traceExporter {
	t.Helper()
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	cfg.url = srv.URL + "/v1/traces"
	if cfg.timeout == 0 {
		cfg.timeout = 10 * time.Second
	}
	e := newTraceExporter(cfg)
	e.backoff = time.Millisecond
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}

var (
	traceID   = trace.TraceID{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}
	spanID    = trace.SpanID{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}
	parentID  = trace.SpanID{0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8}
	linkTrace = trace.TraceID{0xff, 0xfe}
	linkSpan  = trace.SpanID{0xcc}
)

// testSpans are two spans of one resource and scope and one of another
// scope, with every kind of field set on the first.
func testSpans(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	res := resource.NewSchemaless(attribute.String("service.name", "flows-test"))
	scope := instrumentation.Scope{Name: "github.com/flowsrun/flows/queue", Version: "v1"}
	start := time.Unix(1700000000, 123)
	state, err := trace.ParseTraceState("vendor=x")
	require.NoError(t, err)
	first := tracetest.SpanStub{
		Name: "flows.run",
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID,
			TraceFlags: trace.FlagsSampled, TraceState: state}),
		Parent:    trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: parentID, Remote: true}),
		SpanKind:  trace.SpanKindConsumer,
		StartTime: start,
		EndTime:   start.Add(1500 * time.Millisecond),
		Attributes: []attribute.KeyValue{
			attribute.String("flows.flow", "poem_flow"),
			attribute.Int64("flows.attempt", 2),
			attribute.Bool("retry", true),
			attribute.Float64("ratio", 0.5),
			attribute.Float64("nan", math.NaN()),
			attribute.StringSlice("tags", []string{"a", "b"}),
			attribute.Int64Slice("sizes", []int64{1, 2}),
		},
		Events: []sdktrace.Event{{Name: "exception", Time: start.Add(time.Second),
			Attributes: []attribute.KeyValue{attribute.String("exception.message", "boom")}}},
		Links: []sdktrace.Link{{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: linkTrace, SpanID: linkSpan,
			TraceFlags: trace.FlagsSampled, Remote: true})}},
		Status:               sdktrace.Status{Code: codes.Error, Description: "failed"},
		DroppedAttributes:    3,
		Resource:             res,
		InstrumentationScope: scope,
	}
	second := tracetest.SpanStub{
		Name:                 "flows.enqueue",
		SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: parentID, TraceFlags: trace.FlagsSampled}),
		SpanKind:             trace.SpanKindProducer,
		StartTime:            start,
		EndTime:              start,
		Status:               sdktrace.Status{Code: codes.Ok},
		Resource:             res,
		InstrumentationScope: scope,
	}
	other := second
	other.Name = "chat"
	other.InstrumentationScope = instrumentation.Scope{Name: "github.com/flowsrun/flows/flow/lcflow"}
	other.SpanKind = trace.SpanKindClient
	other.Status = sdktrace.Status{}
	return tracetest.SpanStubs{first, second, other}.Snapshots()
}

// TestExporterPostsOTLPJSON: one export is one POST to the endpoint in
// OTLP's JSON encoding: hex ids, enums as numbers, times as strings,
// spans grouped by resource and scope, the configured headers sent.
func TestExporterPostsOTLPJSON(t *testing.T) {
	c := &collector{}
	e := startCollector(t, c, otlpConfig{headers: map[string]string{"Authorization": "Bearer t"}})
	require.NoError(t, e.ExportSpans(context.Background(), testSpans(t)))

	reqs := c.got()
	require.Len(t, reqs, 1)
	assert.Equal(t, "/v1/traces", reqs[0].path)
	assert.Equal(t, "application/json", reqs[0].header.Get("Content-Type"))
	assert.Equal(t, "Bearer t", reqs[0].header.Get("Authorization"))

	var got map[string]any
	require.NoError(t, json.Unmarshal(reqs[0].body, &got), "%s", reqs[0].body)
	var want map[string]any
	require.NoError(t, json.Unmarshal([]byte(`{"resourceSpans": [{
		"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "flows-test"}}]},
		"scopeSpans": [
			{"scope": {"name": "github.com/flowsrun/flows/queue", "version": "v1"}, "spans": [
				{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "a1a2a3a4a5a6a7a8",
				 "traceState": "vendor=x", "parentSpanId": "b1b2b3b4b5b6b7b8", "flags": 769,
				 "name": "flows.run", "kind": 5,
				 "startTimeUnixNano": "1700000000000000123", "endTimeUnixNano": "1700000001500000123",
				 "attributes": [
					{"key": "flows.flow", "value": {"stringValue": "poem_flow"}},
					{"key": "flows.attempt", "value": {"intValue": "2"}},
					{"key": "retry", "value": {"boolValue": true}},
					{"key": "ratio", "value": {"doubleValue": 0.5}},
					{"key": "nan", "value": {"doubleValue": "NaN"}},
					{"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}},
					{"key": "sizes", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": "2"}]}}}],
				 "droppedAttributesCount": 3,
				 "events": [{"timeUnixNano": "1700000001000000123", "name": "exception",
					"attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}]}],
				 "links": [{"traceId": "fffe0000000000000000000000000000", "spanId": "cc00000000000000", "flags": 769}],
				 "status": {"code": 2, "message": "failed"}},
				{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "b1b2b3b4b5b6b7b8", "flags": 257,
				 "name": "flows.enqueue", "kind": 4,
				 "startTimeUnixNano": "1700000000000000123", "endTimeUnixNano": "1700000000000000123",
				 "status": {"code": 1}}]},
			{"scope": {"name": "github.com/flowsrun/flows/flow/lcflow"}, "spans": [
				{"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "b1b2b3b4b5b6b7b8", "flags": 257,
				 "name": "chat", "kind": 3,
				 "startTimeUnixNano": "1700000000000000123", "endTimeUnixNano": "1700000000000000123",
				 "status": {"code": 0}}]}]}]}`), &want))
	assert.Equal(t, want, got)
}

// TestExporterCompresses: with gzip asked for, the body is gzipped and
// says so.
func TestExporterCompresses(t *testing.T) {
	c := &collector{}
	e := startCollector(t, c, otlpConfig{gzip: true})
	require.NoError(t, e.ExportSpans(context.Background(), testSpans(t)[:1]))
	reqs := c.got()
	require.Len(t, reqs, 1)
	assert.Equal(t, "gzip", reqs[0].header.Get("Content-Encoding"))
	assert.NotEqual(t, reqs[0].rawBody, reqs[0].body)
	assert.Contains(t, string(reqs[0].body), `"name":"flows.run"`)
}

// TestExporterRetries: the answers the specification calls transient are
// retried until one succeeds; the others end the export with their
// status and the endpoint's message.
func TestExporterRetries(t *testing.T) {
	tests := []struct {
		name     string
		replies  []reply
		requests int
		err      string // "" for success
	}{
		{"503 then 429 then ok", []reply{{status: 503, retryAfter: "0"}, {status: 429}}, 3, ""},
		{"502 and 504", []reply{{status: 502}, {status: 504}}, 3, ""},
		{"400 is not retried", []reply{{status: 400, body: "bad span"}}, 1, "400 Bad Request: bad span"},
		{"401 is not retried", []reply{{status: 401}}, 1, "401 Unauthorized"},
		{"rejected spans", []reply{{status: 200, body: `{"partialSuccess":{"rejectedSpans":"2","errorMessage":"too old"}}`}}, 1,
			"rejected 2 spans: too old"},
		{"a warning is not an error", []reply{{status: 200, body: `{"partialSuccess":{"errorMessage":"slow down"}}`}}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &collector{replies: tt.replies}
			e := startCollector(t, c, otlpConfig{})
			err := e.ExportSpans(context.Background(), testSpans(t)[:1])
			if tt.err == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.err)
			}
			assert.Len(t, c.got(), tt.requests)
		})
	}
}

// TestExporterGivesUpAtItsTimeout: an endpoint that keeps answering 503
// fails the export once its timeout has passed, saying why.
func TestExporterGivesUpAtItsTimeout(t *testing.T) {
	c := &collector{}
	for range 1000 {
		c.replies = append(c.replies, reply{status: 503})
	}
	// Retries after 1, 2, 4... ms: several fit in the timeout even on a
	// busy machine, and the time may run out during one of them.
	e := startCollector(t, c, otlpConfig{timeout: 300 * time.Millisecond})
	err := e.ExportSpans(context.Background(), testSpans(t)[:1])
	require.Error(t, err)
	assert.ErrorContains(t, err, "503 Service Unavailable", "the last answer, not the cut connection")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, len(c.got()), 2, "retried before giving up")
}

// TestExporterRetriesAnUnreachableEndpoint: a refused connection is
// retried within the timeout, then reported.
func TestExporterRetriesAnUnreachableEndpoint(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nobody listens there now
	e := newTraceExporter(otlpConfig{url: url + "/v1/traces", timeout: 50 * time.Millisecond})
	e.backoff = time.Millisecond
	err := e.ExportSpans(context.Background(), testSpans(t)[:1])
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestExporterShutdown: after Shutdown, exports fail and send nothing.
func TestExporterShutdown(t *testing.T) {
	c := &collector{}
	e := startCollector(t, c, otlpConfig{})
	require.NoError(t, e.Shutdown(context.Background()))
	assert.ErrorIs(t, e.ExportSpans(context.Background(), testSpans(t)), errExporterStopped)
	assert.Empty(t, c.got())
}

// TestSetupExportsThroughTheSDK: Setup's tracer provider sends the spans
// it ends to the configured endpoint, with the service's name, by
// Shutdown at the latest.
func TestSetupExportsThroughTheSDK(t *testing.T) {
	c := &collector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL+"/")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=flows")
	tel, err := Setup(context.Background(), FromEnv("svc", os.Getenv))
	require.NoError(t, err)
	require.True(t, tel.Tracing)
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "work")
	span.End()
	require.NoError(t, tel.Shutdown(context.Background()))

	reqs := c.got()
	require.Len(t, reqs, 1)
	assert.Equal(t, "/v1/traces", reqs[0].path)
	assert.Equal(t, "flows", reqs[0].header.Get("x-team"))
	assert.Contains(t, string(reqs[0].body), `{"key":"service.name","value":{"stringValue":"svc"}}`)
	assert.Contains(t, string(reqs[0].body), `"name":"work"`)
}

// TestSetupReadsTheEnvironmentOfFromEnv: the exporter's settings come
// through the getenv given to FromEnv, as the Options do, not from the
// process's environment, which sets none here.
func TestSetupReadsTheEnvironmentOfFromEnv(t *testing.T) {
	c := &collector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": srv.URL + "/traces",
		"OTEL_EXPORTER_OTLP_HEADERS":         "x-team=flows",
	}
	tel, err := Setup(context.Background(), FromEnv("svc", func(k string) string { return env[k] }))
	require.NoError(t, err)
	require.True(t, tel.Tracing)
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "work")
	span.End()
	require.NoError(t, tel.Shutdown(context.Background()))

	reqs := c.got()
	require.Len(t, reqs, 1)
	assert.Equal(t, "/traces", reqs[0].path)
	assert.Equal(t, "flows", reqs[0].header.Get("x-team"))

	env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
	_, err = Setup(context.Background(), FromEnv("svc", func(k string) string { return env[k] }))
	assert.ErrorContains(t, err, "OTEL_EXPORTER_OTLP_PROTOCOL", "a setting refused")
}

// TestSetupRefusesABadEndpoint: a variable the exporter cannot honour
// stops Setup with an error that names it.
func TestSetupRefusesABadEndpoint(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	_, err := Setup(context.Background(), Options{Service: "svc", Tracing: true})
	assert.ErrorContains(t, err, "OTEL_EXPORTER_OTLP_PROTOCOL")
}

// TestOTLPConfigFromEnv: the variables as the specification reads them.
func TestOTLPConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want otlpConfig
		err  string
	}{
		{"defaults", nil, otlpConfig{url: "http://localhost:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"base endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			otlpConfig{url: "http://collector:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"base endpoint with a path and a slash", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example/otlp/"},
			otlpConfig{url: "https://otel.example/otlp/v1/traces", timeout: 10 * time.Second}, ""},
		{"the traces endpoint is used as it is", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://ignored:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom"},
			otlpConfig{url: "http://collector:4318/custom", timeout: 10 * time.Second}, ""},
		{"headers, decoded, the traces ones winning", map[string]string{
			"OTEL_EXPORTER_OTLP_HEADERS":        "a=1",
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Basic%20eA%3D%3D, x-b = 2 "},
			otlpConfig{url: otlpDefaultEndpoint, timeout: 10 * time.Second,
				headers: map[string]string{"Authorization": "Basic eA==", "x-b": "2"}}, ""},
		{"timeout and gzip", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			otlpConfig{url: otlpDefaultEndpoint, timeout: 2500 * time.Millisecond, gzip: true}, ""},
		{"not a URL", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, otlpConfig{}, "want an http:// or https:// URL"},
		{"header without a value", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,b"}, otlpConfig{}, `OTEL_EXPORTER_OTLP_HEADERS: header 2 is not key=value`},
		{"header badly escaped", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=%zz"}, otlpConfig{}, "the value of a"},
		{"timeout not a number", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10s"}, otlpConfig{}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"},
		{"unknown compression", map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, otlpConfig{}, "want gzip or none"},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, otlpConfig{}, "http/json"},
		{"client certificates", map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_KEY": "key.pem"}, otlpConfig{}, "OTEL_EXPORTER_OTLP_CLIENT_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := otlpConfigFromEnv(func(k string) string { return tt.env[k] })
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestCredentialsKeptOut gives the exporter an endpoint with a password
// and a secret query parameter, and headers with a credential: neither a
// configuration error nor an export's error (which the SDK logs) shows
// them.
func TestCredentialsKeptOut(t *testing.T) {
	const pass, key, bearer = "PLANTED-pass", "PLANTED-key", "PLANTED-bearer"
	secrets := []string{pass, key, bearer}
	noSecret := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		for _, s := range secrets {
			assert.NotContains(t, err.Error(), s)
		}
	}

	t.Run("configuration", func(t *testing.T) {
		for name, env := range map[string]map[string]string{
			"not http":             {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://user:" + pass + "@collector:4318?api_key=" + key},
			"no host":              {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://user:" + pass + "@/v1/traces?api_key=" + key},
			"does not parse":       {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://user:" + pass + "@collector:bad/v1/traces?api_key=" + key},
			"header not key=value": {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization: Bearer " + bearer},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := otlpConfigFromEnv(func(k string) string { return env[k] })
				noSecret(t, err)
			})
		}
	})

	t.Run("export", func(t *testing.T) {
		for _, status := range []int{400, 503} {
			c := &collector{}
			for range 1000 { // 503 is retried until the timeout
				c.replies = append(c.replies, reply{status: status})
			}
			srv := httptest.NewServer(c)
			t.Cleanup(srv.Close)
			url := strings.Replace(srv.URL, "http://", "http://user:"+pass+"@", 1) + "/v1/traces?api_key=" + key
			e := newTraceExporter(otlpConfig{url: url, timeout: 50 * time.Millisecond})
			e.backoff = time.Millisecond
			err := e.ExportSpans(context.Background(), testSpans(t)[:1])
			noSecret(t, err)
			assert.NotEmpty(t, c.got(), "the request was sent")
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close() // nobody listens there now
		url := strings.Replace(srv.URL, "http://", "http://user:"+pass+"@", 1) + "/v1/traces?api_key=" + key
		e := newTraceExporter(otlpConfig{url: url, timeout: 50 * time.Millisecond})
		e.backoff = time.Millisecond
		noSecret(t, e.ExportSpans(context.Background(), testSpans(t)[:1]))
	})
}
