package redisbackend_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// TestStatsCountCancelledWaitingUntilDropped pins what queue.Stats and
// Depth document of this backend: a task cancelled while it waits in the
// stream (pending, or delayed: Cancel moves it to the stream) counts in
// Ready, and its wait in OldestReady, until a worker takes it (then it is
// Running) and drops it. The stream keeps its entry, and the backend
// cannot find a task's entry from its id without a scan. The Memory
// backend leaves such tasks out (TestMemoryStatsLeaveOutCancelledPending).
func TestStatsCountCancelledWaitingUntilDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBackend(t, newClient(t, redistest.Start(t)), redisbackend.Config{})
	reg := registry.New()
	reg.MustRegister("waits", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	in := queue.NewInspector(b, b, queue.InspectorConfig{})
	enqueue := func(opts queue.EnqueueOptions) string {
		t.Helper()
		id, err := broker.Enqueue(ctx, "waits", json.RawMessage(`{}`), opts)
		require.NoError(t, err)
		return id
	}
	first := enqueue(queue.EnqueueOptions{})
	time.Sleep(5 * time.Millisecond) // the stream's ids have a millisecond's precision
	afterFirst := time.Now()
	enqueue(queue.EnqueueOptions{})
	later := enqueue(queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, broker.Cancel(ctx, first))
	require.NoError(t, broker.Cancel(ctx, later))

	st, err := in.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), st.Ready, "the second task, and the two cancelled ones still in the stream")
	assert.Equal(t, int64(0), st.Delayed, "the cancelled delayed task was moved to the stream")
	assert.False(t, st.OldestReady.IsZero())
	assert.False(t, st.OldestReady.After(afterFirst), "the cancelled first task's wait: %v", st.OldestReady)
	assert.Equal(t, int64(2), st.Counts.Failure, "both cancelled tasks have ended, in the counts by state")
	depth, err := b.Depth(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.Depth{Ready: 3}, depth)

	// A worker takes them (the cancelled ones to drop them): they leave
	// Ready for Running, then, acknowledged, the depth.
	leases, err := b.Fetch(ctx, "w", 3, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 3)
	depth, err = b.Depth(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.Depth{Running: 3}, depth)
	for _, l := range leases {
		require.NoError(t, b.Ack(ctx, l))
	}
	st, err = in.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(0), st.Ready)
	assert.True(t, st.OldestReady.IsZero(), "nothing waits: %v", st.OldestReady)
}
