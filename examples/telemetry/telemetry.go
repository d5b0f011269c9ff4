// Package telemetry sets up OpenTelemetry for the example server and
// worker from the environment: metrics for Prometheus, and traces over
// OTLP/HTTP when an OTLP endpoint is configured. The library itself uses
// only the OpenTelemetry API; the SDK is here, in the examples module, so
// that a program importing the library never builds it. The two exporters
// are small ones of this package (OTLP/HTTP in JSON, and the Prometheus
// text format), which keep protobuf, gRPC and the Prometheus client out of
// the demo's build.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Telemetry is the examples' OpenTelemetry: the providers to hand to the
// broker, the workers and the handler, and the /metrics handler.
type Telemetry struct {
	// TracerProvider exports over OTLP/HTTP when Tracing is set; else it
	// is a no-op provider.
	TracerProvider trace.TracerProvider
	// MeterProvider feeds Metrics.
	MeterProvider *sdkmetric.MeterProvider
	// Metrics serves the metrics in the Prometheus text format.
	Metrics http.Handler
	// Tracing is set when traces are exported (an OTLP endpoint is set).
	Tracing bool

	shutdown []func(context.Context) error
}

// Options says what Setup makes.
type Options struct {
	// Service is the service.name of the spans and metrics.
	Service string
	// Tracing turns on the export of traces over OTLP/HTTP, encoded in
	// JSON. The exporter reads where to (OTEL_EXPORTER_OTLP_ENDPOINT, to
	// which v1/traces is added, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as
	// it is) and the headers, timeout and compression
	// (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, or their
	// _TRACES_ forms) through Getenv; it refuses
	// OTEL_EXPORTER_OTLP_PROTOCOL=grpc and client certificates.
	Tracing bool
	// Getenv reads the exporter's settings (see Tracing); nil reads the
	// process's environment (os.Getenv). FromEnv sets it to the getenv
	// it is given, so that the Options and the exporter read one
	// environment. The SDK reads its own variables (OTEL_RESOURCE_ATTRIBUTES,
	// OTEL_METRICS_EXEMPLAR_FILTER) from the process's environment.
	Getenv func(string) string
}

// FromEnv returns the Options that getenv asks for: tracing when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set, and OTEL_SERVICE_NAME as the service's name if set, else service;
// Setup reads the exporter's settings through getenv too (Getenv).
func FromEnv(service string, getenv func(string) string) Options {
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		service = name
	}
	return Options{
		Service: service,
		Tracing: getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "",
		Getenv:  getenv,
	}
}

// envExemplarFilter names the SDK's exemplar filter (always_on,
// always_off, trace_based). Unset, Setup turns exemplars off: the
// Prometheus text that Metrics writes has none, and offering each
// measurement to a reservoir costs about 190 CPU instructions (a tenth
// of a histogram's Record; see BENCHMARKS.md). Set it to trace_based,
// the SDK's default, for a reader that exports them.
const envExemplarFilter = "OTEL_METRICS_EXEMPLAR_FILTER"

// Setup makes the providers that opts asks for: always a meter provider
// read at each request of Metrics, without exemplars unless
// OTEL_METRICS_EXEMPLAR_FILTER asks for them, and, with opts.Tracing, a tracer
// provider exporting over OTLP/HTTP. It also installs the providers and
// the W3C propagator as the global ones. Call Shutdown when done, to
// flush what is left.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	service := opts.Service
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	t := &Telemetry{}

	t.TracerProvider = noop.NewTracerProvider()
	var exp *traceExporter
	if opts.Tracing {
		getenv := opts.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		cfg, err := otlpConfigFromEnv(getenv)
		if err != nil {
			return nil, err
		}
		exp = newTraceExporter(cfg)
	}

	reader := sdkmetric.NewManualReader()
	t.MeterProvider = newMeterProvider(reader, res)
	t.shutdown = append(t.shutdown, t.MeterProvider.Shutdown)
	t.Metrics = metricsHandler(reader)

	if exp != nil {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.TracerProvider, t.Tracing = tp, true
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

// newMeterProvider makes the meter provider of reader, exemplars off
// unless OTEL_METRICS_EXEMPLAR_FILTER is set (see envExemplarFilter).
func newMeterProvider(reader sdkmetric.Reader, res *resource.Resource) *sdkmetric.MeterProvider {
	opts := []sdkmetric.Option{sdkmetric.WithReader(reader), sdkmetric.WithResource(res)}
	if os.Getenv(envExemplarFilter) == "" {
		opts = append(opts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	return sdkmetric.NewMeterProvider(opts...)
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}
