package progress_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// endingOnce is a store whose first subscription ends before the task
// does, as a Redis subscription ends when a failover lost the events it
// delivered.
type endingOnce struct {
	*progress.MemoryStore
	subscribed atomic.Int32
}

func (s *endingOnce) Subscribe(ctx context.Context, taskID, afterID string) (<-chan progress.Event, error) {
	if s.subscribed.Add(1) == 1 {
		ch := make(chan progress.Event)
		close(ch)
		return ch, nil
	}
	return s.MemoryStore.Subscribe(ctx, taskID, afterID)
}

// TestWaitFinishedOverAnEndedSubscription: when the subscription ends
// before the task while the task is still there, WaitFinished reads its
// snapshot again and goes on waiting, and returns the end; when the task
// is gone, ErrNotFound.
func TestWaitFinishedOverAnEndedSubscription(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store := &endingOnce{MemoryStore: progress.NewMemoryStore(progress.MemoryConfig{})}
	require.NoError(t, store.Create(ctx, "t1"))
	_, err := store.Append(ctx, "t1", progress.LogEvent("one"))
	require.NoError(t, err)
	go func() {
		for store.subscribed.Load() < 2 {
			time.Sleep(time.Millisecond)
		}
		_, _ = store.Append(ctx, "t1", progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: []byte(`"ok"`)})
	}()
	snap, last, err := progress.WaitFinished(ctx, store, "t1")
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Len(t, snap.Details.StepResults, 1, "the events are folded once")
	assert.Equal(t, "2", last)

	gone := &endingOnce{MemoryStore: progress.NewMemoryStore(progress.MemoryConfig{Retention: 50 * time.Millisecond})}
	require.NoError(t, gone.Create(ctx, "t2"))
	gone.subscribed.Store(1)
	_, _, err = progress.WaitFinished(ctx, gone, "t2")
	assert.ErrorIs(t, err, progress.ErrNotFound)
}
