//go:build unix

package oteltest_test

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// benchEnds is a progress store that closes done when want tasks have
// recorded their terminal event.
type benchEnds struct {
	progress.Store
	want int64
	n    atomic.Int64
	done chan struct{}
}

func (c *benchEnds) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	last, err := c.Store.Append(ctx, id, events...)
	if err == nil && len(events) > 0 && events[len(events)-1].Terminal() && c.n.Add(1) == c.want {
		close(c.done)
	}
	return last, err
}

// BenchmarkTaskTelemetry is what a task costs the process, enqueue and
// run, in memory, with each of flowbench's -otel settings: nothing
// installed (none), the SDK's meter provider (metrics), and the SDK's
// tracer provider too, sampling one trace in ten (sampled) or every one
// (sdk), batched to an exporter that drops the spans. The flow reports
// five progress events and returns, as flowbench's throughput does; the
// memory backend leaves out Redis and the network, whose cost varies with
// the load, so that what tracing and metrics add per task stands out
// from the noise. cpu-ns/op is the process's CPU time per task (every
// goroutine, the GC and the span processor's included).
func BenchmarkTaskTelemetry(b *testing.B) {
	// The first tasks of a process cost more than those after them (its
	// heap is new: the kernel hands it zeroed pages), whatever is
	// installed: run some before measuring.
	warmUp.Do(func() { runTasks(b, *warmTasks, "none") })
	for _, mode := range []string{"none", "metrics", "sampled", "sdk"} {
		b.Run(mode, func(b *testing.B) {
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := runTasks(b, b.N, mode)
			b.StopTimer()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

var (
	warmUp    sync.Once
	warmTasks = flag.Int("warmup", 20000, "tasks BenchmarkTaskTelemetry runs before it measures")
)

// runTasks enqueues n tasks and runs them with mode's providers, and
// returns the process's CPU time from the first enqueue to the last end.
func runTasks(b *testing.B, n int, mode string) time.Duration {
	ctx := context.Background()
	var p providers
	if mode != "none" {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer func() { _ = mp.Shutdown(ctx) }()
		p.mp = mp
	}
	if mode == "sampled" || mode == "sdk" {
		sampler := sdktrace.AlwaysSample()
		if mode == "sampled" {
			sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(dropExporter{}))
		defer func() { _ = tp.Shutdown(ctx) }()
		p.tp = tp
	}
	reg := registry.New()
	reg.MustRegister("noop", flow.Func(func(_ context.Context, t *flow.Task) (any, error) {
		for i := 1; i <= 5; i++ {
			t.Progress.Progress(i*100/6, "")
		}
		return nil, nil
	}))
	mem := queue.NewMemory(queue.MemoryConfig{Retention: time.Minute})
	store := &benchEnds{Store: progress.NewMemoryStore(progress.MemoryConfig{Retention: time.Minute}), want: int64(n), done: make(chan struct{})}
	broker := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: reg, TracerProvider: p.tp, MeterProvider: p.mp})
	w := queue.NewWorker(mem, store, queue.WorkerConfig{Registry: reg, Concurrency: 256, Logger: slog.New(slog.DiscardHandler),
		TracerProvider: p.tp, MeterProvider: p.mp})
	inputs := json.RawMessage(`{}`)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	cpu0 := cpuTime()
	for range n {
		if _, err := broker.Enqueue(ctx, "noop", inputs, queue.EnqueueOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Go(func() { _ = w.Run(runCtx) })
	<-store.done
	return cpuTime() - cpu0
}
