package queue

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMemoryBounded checks that nothing of a finished task stays behind
// once its retention has passed.
func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(MemoryConfig{Retention: time.Millisecond})
	for range 1000 {
		require.NoError(t, m.Enqueue(ctx, &Task{ID: NewID(), Flow: "f"}))
		leases, err := m.Fetch(ctx, "w", 10, time.Minute)
		require.NoError(t, err)
		for _, l := range leases {
			require.NoError(t, m.Ack(ctx, l))
		}
	}
	time.Sleep(2 * time.Millisecond)
	_, err := m.Get(ctx, NewID()) // any call sweeps
	require.ErrorIs(t, err, ErrNotFound)

	m.mu.Lock()
	defer m.mu.Unlock()
	assert.Empty(t, m.tasks)
	assert.Zero(t, m.ready.len())
	assert.Zero(t, m.finished.len())
	assert.Empty(t, m.timers)
	assert.Less(t, cap(m.finished.items), 1000, "the finished queue gives memory back")
}

func TestFIFO(t *testing.T) {
	var q fifo[int]
	next := 0
	for round := range 5 {
		for i := range 100 * (round + 1) {
			q.push(round*1000 + i)
		}
		for q.len() > 0 {
			v := q.pop()
			assert.Equal(t, round*1000+next, v)
			next++
		}
		next = 0
		assert.LessOrEqual(t, len(q.items), 0, "drained queue keeps no items")
	}
}
