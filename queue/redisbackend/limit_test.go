package redisbackend_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// TestLimitedEnqueueWaitsForTheReplica: in durable mode a task of a
// limited flow is in its flow's gate on the replica when Enqueue returns,
// and an enqueue the replica cannot confirm fails.
func TestLimitedEnqueueWaitsForTheReplica(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary, redistest.Options{})
	b := newBackend(t, newClient(t, primary), redisbackend.Config{WaitReplicas: 1, WaitTimeout: time.Second})
	reg := registry.New()
	reg.MustRegister("one", reportingFlow, registry.Concurrency(1))
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	ctx := context.Background()
	gate := b.Prefix() + ":{q:default}:limit:gate:one"

	first, err := broker.Enqueue(ctx, "one", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	second, err := broker.Enqueue(ctx, "one", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	ids, err := replica.Do("ZRANGE", gate, "0", "-1").AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{second}, ids, "the first took the slot, the second waits in the gate, on the replica too")
	assert.NotEqual(t, first, second)

	require.NoError(t, replica.Do("REPLICAOF", "NO", "ONE").Error())
	_, err = broker.Enqueue(ctx, "one", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.ErrorIs(t, err, queue.ErrUnavailable)
	assert.ErrorContains(t, err, "not confirmed by the replicas in time")
}
