package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// TestKeyClaimedByAnEnqueueThatDied: an Enqueue that recorded a keyed
// task's progress and died before queueing it leaves the key to a task
// that would never run; the next Enqueue with the key waits claimWait for
// the queue record, then queues the task itself.
func TestKeyClaimedByAnEnqueueThatDied(t *testing.T) {
	old := claimWait
	claimWait = 50 * time.Millisecond
	t.Cleanup(func() { claimWait = old })

	ctx := context.Background()
	mem := NewMemory(MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	var logs bytes.Buffer
	flows := registry.New()
	flows.MustRegister("f", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	b := NewBroker(mem, store, BrokerConfig{Registry: flows, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	id := IdempotentID("", "k")
	require.NoError(t, store.Create(ctx, id), "the half-done Enqueue")
	got, err := b.Enqueue(ctx, "f", json.RawMessage(`{"a":1}`), EnqueueOptions{IdempotencyKey: "k"})
	require.NoError(t, err)
	assert.Equal(t, id, got)
	task, err := mem.Get(ctx, id)
	require.NoError(t, err, "queued now")
	assert.Equal(t, "f", task.Flow)
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "did not finish")

	again, err := b.Enqueue(ctx, "f", json.RawMessage(`{"a":1}`), EnqueueOptions{IdempotencyKey: "k"})
	require.NoError(t, err)
	assert.Equal(t, id, again)
	leases, err := mem.Fetch(ctx, "w", 10, time.Minute)
	require.NoError(t, err)
	assert.Len(t, leases, 1, "queued once")
}

func TestIdempotentIDScopesByOwner(t *testing.T) {
	assert.Equal(t, IdempotentID("alice", "k"), IdempotentID("alice", "k"))
	assert.NotEqual(t, IdempotentID("alice", "k"), IdempotentID("bob", "k"))
	assert.NotEqual(t, IdempotentID("a", "bk"), IdempotentID("ab", "k"), "no two pairs make one text")
	assert.True(t, ValidID(IdempotentID("", "k")))
	assert.Len(t, IdempotentID("", "k"), len(NewID()))
}

func TestSameJSON(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{`{"a":1}`, "{ \"a\" : 1 }\n", true},
		{`{"a":1}`, `{"a":2}`, false},
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`, false},
		{`not json`, `not json`, true},
		{`not json`, `not  json`, false},
	} {
		assert.Equal(t, tc.same, sameJSON(json.RawMessage(tc.a), json.RawMessage(tc.b)), "%s ~ %s", tc.a, tc.b)
	}
}
