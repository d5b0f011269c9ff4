package failover

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestExplainTellsWhereATaskIs checks the report of a lost task against
// a queue whose state is known: one task leased and not acknowledged, one
// waiting in the stream, one due later, and the log line that named the
// first.
func TestExplainTellsWhereATaskIs(t *testing.T) {
	ctx := context.Background()
	client := redistest.Start(t).Client(t)
	b, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	for _, task := range []*queue.Task{
		{ID: "leased", Flow: "f"}, {ID: "waiting", Flow: "f"},
		{ID: "later", Flow: "f", RunAt: time.Now().Add(time.Hour)},
	} {
		require.NoError(t, b.CreateAndEnqueue(ctx, task))
	}
	leases, err := b.Fetch(ctx, "w1", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.Equal(t, "leased", leases[0].Task.ID)

	logs := &taskLogs{}
	slog.New(&logHandler{next: slog.DiscardHandler, logs: logs}).With("task_id", "leased").Warn("look here")

	got := explain(ctx, client, b.Prefix(), b.Queue(), []string{"leased", "waiting", "later", "gone"}, logs)
	require.Len(t, got, 4)
	for _, l := range got {
		require.NoError(t, l.Err)
		assert.EqualValues(t, 1, l.Pending, "one entry is pending")
		t.Log(l)
	}
	leased, waiting, later, gone := got[0], got[1], got[2], got[3]

	assert.Equal(t, "PENDING", leased.Record["state"])
	require.Len(t, leased.Entries, 1)
	assert.Equal(t, "w1", leased.Entries[0].Consumer)
	assert.EqualValues(t, 1, leased.Entries[0].Deliveries)
	assert.NotEmpty(t, leased.Entries[0].Holder)
	assert.NotEmpty(t, leased.Entries[0].Lease)
	assert.Equal(t, leased.Entries[0].ID, leased.LastDelivered)
	require.Len(t, leased.Logs, 1)
	assert.Contains(t, leased.Logs[0], "look here")

	require.Len(t, waiting.Entries, 1)
	assert.Empty(t, waiting.Entries[0].Consumer, "not delivered")
	assert.Empty(t, waiting.Entries[0].Holder)
	assert.Empty(t, waiting.Logs)

	assert.Empty(t, later.Entries)
	assert.NotEmpty(t, later.Delayed)
	assert.Contains(t, later.String(), "no stream entry")

	assert.Nil(t, gone.Record)
	assert.Contains(t, gone.String(), "no record")
}
