package queue_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// endCounter is a progress store that signals when want tasks have
// recorded their terminal event.
type endCounter struct {
	progress.Store
	want int64
	n    atomic.Int64
	done chan struct{}
}

func (c *endCounter) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	last, err := c.Store.Append(ctx, id, events...)
	if err == nil && len(events) > 0 && events[len(events)-1].Terminal() && c.n.Add(1) == c.want {
		close(c.done)
	}
	return last, err
}

// BenchmarkWorker measures what the Worker itself costs per task: b.N
// tasks of a flow that reports five progress events and returns, queued
// in memory beforehand, run by one Worker with 256 slots. The in-memory
// backend and store are the cheapest there are, so this is mostly the
// worker's machinery: leases handed to runners, the flow's context,
// heartbeat and reporter, the start and the success recorded.
func BenchmarkWorker(b *testing.B) {
	ctx := context.Background()
	reg := registry.New()
	reg.MustRegister("noop", flow.Func(func(_ context.Context, t *flow.Task) (any, error) {
		for i := 1; i <= 5; i++ {
			t.Progress.Progress(i*100/6, "")
		}
		return nil, nil
	}))
	mem := queue.NewMemory(queue.MemoryConfig{Retention: time.Minute})
	store := &endCounter{Store: progress.NewMemoryStore(progress.MemoryConfig{Retention: time.Minute}), want: int64(b.N), done: make(chan struct{})}
	broker := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: reg})
	for range b.N {
		if _, err := broker.Enqueue(ctx, "noop", json.RawMessage(`{}`), queue.EnqueueOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	w := queue.NewWorker(mem, store, queue.WorkerConfig{Registry: reg, Concurrency: 256, Logger: slog.New(slog.DiscardHandler)})
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	wg.Go(func() { _ = w.Run(runCtx) })
	<-store.done
	b.StopTimer()
	stop()
	wg.Wait()
}
