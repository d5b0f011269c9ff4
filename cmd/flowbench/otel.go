package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// OpenTelemetry modes of the throughput scenario (-otel).
const (
	// otelNone installs nothing: the library's spans and measurements
	// go to the global providers, which do nothing.
	otelNone = "none"
	// otelSDK installs the SDK: every span sampled and batched to an
	// exporter that drops it, every measurement aggregated in memory (a
	// manual reader that nobody collects), as a program that exports
	// would, less the export itself.
	otelSDK = "sdk"
	// otelMetrics installs the SDK's meter provider alone, exemplars
	// off as in the examples unless OTEL_METRICS_EXEMPLAR_FILTER is set.
	otelMetrics = "metrics"
	// otelSampled is otelSDK with a share of the traces sampled
	// (ParentBased(TraceIDRatioBased(-otel-ratio)), one in a hundred
	// unless told), as a busy service samples.
	otelSampled = "sampled"
)

var otelModes = []string{otelNone, otelMetrics, otelSampled, otelSDK}

// parseOTel reads the -otel flag: modes separated by commas, run in
// turn, one run each, so that they are measured under the same load.
func parseOTel(s string) ([]string, error) {
	var modes []string
	for m := range strings.SplitSeq(s, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(otelModes, m) {
			return nil, fmt.Errorf("-otel: unknown mode %q (want %s)", m, strings.Join(otelModes, ", "))
		}
		modes = append(modes, m)
	}
	return modes, nil
}

// providers are the tracer and meter providers a run hands to the broker
// and the worker; nil ones are the global (no-op) providers.
type providers struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	shutdown func()
}

// newProviders makes the providers of mode; ratio is the share of the
// traces sampled in otelSampled.
func newProviders(mode string, ratio float64) providers {
	if mode == otelNone {
		return providers{shutdown: func() {}}
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(sdkmetric.NewManualReader())}
	if os.Getenv("OTEL_METRICS_EXEMPLAR_FILTER") == "" {
		// As the examples set it up (README, Observability): no
		// exemplars unless the environment asks for them.
		opts = append(opts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	p := providers{mp: mp, shutdown: func() { _ = mp.Shutdown(context.Background()) }}
	if mode == otelMetrics {
		return p
	}
	sampler := sdktrace.AlwaysSample()
	if mode == otelSampled {
		sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(dropExporter{}))
	p.tp = tp
	p.shutdown = func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	}
	return p
}

// dropExporter is a span exporter that drops what it is given.
type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }
