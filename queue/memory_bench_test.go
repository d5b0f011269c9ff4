package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// BenchmarkMemoryEnqueue measures enqueue on the in-memory backend: the
// backend's own Enqueue, and what start-task costs through a Broker (the
// progress record, then the task). Tasks are fetched and acknowledged as
// the benchmark goes, so that the queue does not grow without bound.
func BenchmarkMemoryEnqueue(b *testing.B) {
	ctx := context.Background()
	drain := func(b *testing.B, m *queue.Memory) {
		b.Helper()
		leases, err := m.Fetch(ctx, "bench", 1000, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range leases {
			if err := m.Ack(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("Backend", func(b *testing.B) {
		m := queue.NewMemory(queue.MemoryConfig{Retention: time.Millisecond})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := m.Enqueue(ctx, &queue.Task{ID: queue.NewID(), Flow: "f", Inputs: json.RawMessage(`{}`)}); err != nil {
				b.Fatal(err)
			}
			if i++; i%1000 == 0 {
				drain(b, m)
			}
		}
	})
	b.Run("Broker", func(b *testing.B) {
		m := queue.NewMemory(queue.MemoryConfig{Retention: time.Millisecond})
		broker := queue.NewBroker(m, progress.NewMemoryStore(progress.MemoryConfig{Retention: time.Minute}), queue.BrokerConfig{Registry: flowsNamed("f")})
		inputs := json.RawMessage(`{"question":"why is the sky blue?"}`)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := broker.Enqueue(ctx, "f", inputs, queue.EnqueueOptions{}); err != nil {
				b.Fatal(err)
			}
			if i++; i%1000 == 0 {
				drain(b, m)
			}
		}
	})
}
