package progress_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// BenchmarkMemoryAppend measures event publish on the in-memory store:
// one Append of one event, with live subscribers draining the task.
func BenchmarkMemoryAppend(b *testing.B) {
	for _, subscribers := range []int{0, 1, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subscribers), func(b *testing.B) {
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			require.NoError(b, store.Create(ctx, "t"))
			var drained sync.WaitGroup
			for range subscribers {
				ch, err := store.Subscribe(ctx, "t", "")
				require.NoError(b, err)
				drained.Go(func() {
					for range ch {
					}
				})
			}
			e := progress.Event{Type: progress.EventProgress, Progress: 42, Status: "Searching the web"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := store.Append(ctx, "t", e); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cancel()
			drained.Wait()
		})
	}
}

// BenchmarkTaskReporter measures what a flow pays for one progress report
// on the in-memory store.
func BenchmarkTaskReporter(b *testing.B) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(b, store.Create(context.Background(), "t"))
	rep := progress.NewTaskReporter(store, "t", nil)
	b.ReportAllocs()
	for b.Loop() {
		rep.Progress(42, "Searching the web")
	}
}
