//go:build unix

package oteltest_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dropExporter drops the spans it is given, as flowbench's does.
type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkSDKSpan is the OpenTelemetry SDK's own cost of one span as
// the queue makes them (started, given its attributes, ended, batched to
// an exporter that drops it), sampled and not: the floor of what tracing
// costs per span, whatever the library does around it. A task is two
// spans (its enqueue and its run).
func BenchmarkSDKSpan(b *testing.B) {
	for _, bc := range []struct {
		name    string
		sampler sdktrace.Sampler
		batch   bool
	}{
		{"sampled", sdktrace.AlwaysSample(), true},
		{"sampled-no-processor", sdktrace.AlwaysSample(), false},
		{"unsampled", sdktrace.NeverSample(), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(bc.sampler)}
			if bc.batch {
				opts = append(opts, sdktrace.WithBatcher(dropExporter{}))
			}
			tp := sdktrace.NewTracerProvider(opts...)
			defer func() { _ = tp.Shutdown(context.Background()) }()
			tr := tp.Tracer("bench")
			kind := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					_, span := tr.Start(ctx, "flows.run", kind...)
					if span.IsRecording() {
						span.SetAttributes(attribute.String("flows.task.id", "0af7651916cd43dd8448eb211c80319c"),
							attribute.String("flows.flow", "noop"), attribute.Int("flows.task.attempt", 1),
							attribute.String("flows.run.outcome", "success"))
					}
					span.End()
				}
			})
			_ = tp.ForceFlush(context.Background())
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkSDKHistogram is the OpenTelemetry SDK's own cost of one
// measurement as the worker records a run's duration: a histogram of 20
// bounds, an attribute set made once, no trace in the context. A task is
// two (its run's duration and its pickup latency). trace-based is the
// SDK's default exemplar filter, off the examples' (no exemplars).
func BenchmarkSDKHistogram(b *testing.B) {
	for _, bc := range []struct {
		name   string
		filter exemplar.Filter
	}{
		{"trace-based", exemplar.TraceBasedFilter},
		{"off", exemplar.AlwaysOffFilter},
	} {
		b.Run(bc.name, func(b *testing.B) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()),
				sdkmetric.WithExemplarFilter(bc.filter))
			defer func() { _ = mp.Shutdown(context.Background()) }()
			h, err := mp.Meter("bench").Float64Histogram("flows.task.run.duration", metric.WithUnit("s"),
				metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
					1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
			if err != nil {
				b.Fatal(err)
			}
			opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("flows.flow", "noop"), attribute.String("flows.run.outcome", "success")))}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				h.Record(ctx, 0.0042, opts...)
			}
		})
	}
}
