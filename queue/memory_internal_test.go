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

// TestMemoryRateWaitWakesSleepingFetch checks that a task held back by its
// flow's rate reaches a Fetch that was already asleep with nothing to wait
// for: the enqueue must tell it when the rate lets the task start.
func TestMemoryRateWaitWakesSleepingFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := NewMemory(MemoryConfig{})
	limit := Limit{Rate: 1, Per: 20 * time.Millisecond}
	first := &Task{ID: NewID(), Flow: "paced", Limit: limit}
	require.NoError(t, m.Enqueue(ctx, first))
	leases, err := m.Fetch(ctx, "w", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)

	got := make(chan []*Lease, 1)
	go func() {
		l, _ := m.Fetch(ctx, "w", 4, time.Minute)
		got <- l
	}()
	// Let the Fetch fall asleep: no task waits, so it has no timer.
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.gateNext.IsZero() && len(m.timers) == 1 // the first lease's deadline
	}, time.Second, time.Millisecond)
	time.Sleep(10 * time.Millisecond)

	second := &Task{ID: NewID(), Flow: "paced", Limit: limit}
	require.NoError(t, m.Enqueue(ctx, second)) // within 20 ms of the first start
	l := <-got
	require.Len(t, l, 1, "the sleeping Fetch never learned when the rate lets the task start")
	assert.Equal(t, second.ID, l[0].Task.ID)
}
