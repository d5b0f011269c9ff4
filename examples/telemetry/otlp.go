package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flowsrun/flows/internal/redact"
)

// The trace exporter of the examples sends spans over OTLP/HTTP in OTLP's
// JSON encoding, which every OpenTelemetry collector accepts on the same
// endpoint as protobuf. It is a few hundred lines of our own instead of
// OpenTelemetry's OTLP exporter because that one encodes with the OTLP
// protobuf packages, which bring protobuf and gRPC (more than a hundred
// packages) into the demo's build.

// otlpDefaultEndpoint is where traces go when only tracing is asked for.
const otlpDefaultEndpoint = "http://localhost:4318/v1/traces"

// otlpConfig is what the OTEL_EXPORTER_OTLP_* variables ask of the trace
// exporter.
type otlpConfig struct {
	url     string
	headers map[string]string
	timeout time.Duration // for one export, retries included
	gzip    bool
}

// otlpConfigFromEnv reads the trace exporter's configuration as the
// OpenTelemetry specification defines the variables: each
// OTEL_EXPORTER_OTLP_TRACES_* variable, when set, wins over its
// OTEL_EXPORTER_OTLP_* counterpart; OTEL_EXPORTER_OTLP_ENDPOINT is a base
// URL to which v1/traces is added, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// used as it is. What this exporter cannot do (gRPC, client
// certificates) is refused with an error rather than ignored.
func otlpConfigFromEnv(getenv func(string) string) (otlpConfig, error) {
	env := func(name string) (string, string) {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_" + name)); v != "" {
			return v, "OTEL_EXPORTER_OTLP_TRACES_" + name
		}
		return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_" + name)), "OTEL_EXPORTER_OTLP_" + name
	}
	cfg := otlpConfig{url: otlpDefaultEndpoint, timeout: 10 * time.Second}

	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
		cfg.url = v
	} else if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
		cfg.url = strings.TrimSuffix(v, "/") + "/v1/traces"
	}
	u, err := url.Parse(cfg.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return otlpConfig{}, fmt.Errorf("telemetry: OTLP endpoint %q: want an http:// or https:// URL", redact.URL(cfg.url))
	}

	if v, name := env("HEADERS"); v != "" {
		cfg.headers = map[string]string{}
		n := 0
		for pair := range strings.SplitSeq(v, ",") {
			n++
			key, value, ok := strings.Cut(pair, "=")
			key = strings.TrimSpace(key)
			if !ok || key == "" {
				// The pair is not quoted: a header's value is often a
				// credential ("Authorization: Bearer ..." mistyped).
				return otlpConfig{}, fmt.Errorf("telemetry: %s: header %d is not key=value", name, n)
			}
			value, err := url.PathUnescape(strings.TrimSpace(value))
			if err != nil {
				return otlpConfig{}, fmt.Errorf("telemetry: %s: the value of %s: %w", name, key, err)
			}
			cfg.headers[key] = value
		}
	}
	if v, name := env("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return otlpConfig{}, fmt.Errorf("telemetry: %s=%q: want a positive number of milliseconds", name, v)
		}
		cfg.timeout = time.Duration(ms) * time.Millisecond
	}
	switch v, name := env("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		cfg.gzip = true
	default:
		return otlpConfig{}, fmt.Errorf("telemetry: %s=%q: want gzip or none", name, v)
	}
	switch v, name := env("PROTOCOL"); v {
	case "", "http/json", "http/protobuf": // JSON either way: collectors take both on one endpoint
	default:
		return otlpConfig{}, fmt.Errorf("telemetry: %s=%q: the examples export traces over OTLP/HTTP (http/json) only", name, v)
	}
	for _, name := range []string{"CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
		if v, full := env(name); v != "" {
			return otlpConfig{}, fmt.Errorf("telemetry: %s is set: the examples' exporter uses the system's certificates only", full)
		}
	}
	return cfg, nil
}

// errExporterStopped is what an export after Shutdown returns.
var errExporterStopped = errors.New("telemetry: the OTLP trace exporter is shut down")

// traceExporter is an sdktrace.SpanExporter that posts spans to an
// OTLP/HTTP endpoint, encoded in JSON. It retries what the specification
// says to retry (429, 502, 503, 504, and failures to connect), waiting
// as the endpoint's Retry-After asks or backing off exponentially, until
// the export's timeout.
type traceExporter struct {
	cfg otlpConfig
	// display is cfg.url as errors show it, and secrets the credentials
	// it carries (redact): an export's error is logged by the SDK.
	display string
	secrets []string
	client  *http.Client
	backoff time.Duration // the first wait before a retry; doubles up to maxBackoff
	stopped atomic.Bool
}

const maxBackoff = 5 * time.Second

func newTraceExporter(cfg otlpConfig) *traceExporter {
	return &traceExporter{cfg: cfg, display: redact.URL(cfg.url), secrets: redact.Secrets(cfg.url),
		client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, backoff: time.Second / 4}
}

var _ sdktrace.SpanExporter = (*traceExporter)(nil)

// ExportSpans sends spans in one request, retrying until the timeout.
func (e *traceExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() {
		return errExporterStopped
	}
	if len(spans) == 0 {
		return nil
	}
	body, err := json.Marshal(otlpTraces(spans))
	if err != nil {
		return fmt.Errorf("telemetry: encoding spans: %w", err)
	}
	if e.cfg.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body) // a bytes.Buffer does not fail
		_ = zw.Close()
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	wait := e.backoff
	var last error // the answer of the attempt before
	for {
		retry, after, err := e.post(ctx, body)
		if err != nil && last != nil && ctx.Err() != nil {
			// The time ran out during a retry: the answer before says
			// more than the cut connection.
			return fmt.Errorf("%w (gave up: %w)", last, context.Cause(ctx))
		}
		if err == nil || !retry {
			return err
		}
		last = err
		if after <= 0 {
			after = wait
			wait = min(2*wait, maxBackoff)
		}
		t := time.NewTimer(after)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// post sends one request. It says whether a failure may be retried, and
// after how long the endpoint asked (0: not said).
func (e *traceExporter) post(ctx context.Context, body []byte) (retry bool, after time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, fmt.Errorf("telemetry: OTLP export: %w", redact.Error(err, e.secrets...))
	}
	for k, v := range e.cfg.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	if e.cfg.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, 0, fmt.Errorf("telemetry: OTLP export to %s: %w", e.display, redact.Error(err, e.secrets...))
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, 0, otlpPartialSuccess(reply)
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		return true, retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("telemetry: OTLP export to %s: %s", e.display, resp.Status)
	default:
		return false, 0, fmt.Errorf("telemetry: OTLP export to %s: %s: %s", e.display, resp.Status, bytes.TrimSpace(reply))
	}
}

// otlpPartialSuccess is the error a successful reply still reports: the
// spans the collector rejected, if any.
func otlpPartialSuccess(reply []byte) error {
	var r struct {
		PartialSuccess struct {
			RejectedSpans json.Number `json:"rejectedSpans"` // a string or a number in JSON
			ErrorMessage  string      `json:"errorMessage"`
		} `json:"partialSuccess"`
	}
	if len(reply) == 0 || json.Unmarshal(reply, &r) != nil {
		return nil // a protobuf or empty reply: nothing rejected that we can read
	}
	if n, _ := r.PartialSuccess.RejectedSpans.Int64(); n > 0 {
		return fmt.Errorf("telemetry: the OTLP endpoint rejected %d spans: %s", n, r.PartialSuccess.ErrorMessage)
	}
	return nil
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// Shutdown stops the exporter: later exports fail.
func (e *traceExporter) Shutdown(ctx context.Context) error {
	e.stopped.Store(true)
	e.client.CloseIdleConnections()
	return ctx.Err()
}
