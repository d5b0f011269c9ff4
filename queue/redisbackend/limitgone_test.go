package redisbackend_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// TestGateOfFlowWhoseLimitsAreGoneDrains: tasks of a limited flow queued
// while no worker runs wait in the flow's gate; a deploy then removes the
// flow's limits. A worker whose registry has the flow without limits lets
// them all through, those due later too (at their time), and an admit of
// the flow without limits leaves no gate and no slots set behind.
func TestGateOfFlowWhoseLimitsAreGoneDrains(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	before := registry.New()
	before.MustRegister("capped", reportingFlow, registry.Concurrency(1), registry.Rate(1, time.Hour))
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: before})
	var ids []string
	for i := range 4 {
		opts := queue.EnqueueOptions{}
		if i == 3 {
			opts.RunAt = time.Now().Add(300 * time.Millisecond)
		}
		id, err := broker.Enqueue(ctx, "capped", json.RawMessage(`{}`), opts)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	gate := b.Prefix() + ":{q:default}:limit:gate:capped"
	slots := b.Prefix() + ":{q:default}:limit:slots:capped"
	n, err := srv.Do("ZCARD", gate).AsInt64()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "the first took the slot, the others wait in the gate")

	after := registry.New()
	after.MustRegister("capped", reportingFlow)
	startWorker(t, queue.NewWorker(b, b, queue.WorkerConfig{Registry: after, Concurrency: 4, Logger: quiet}))
	for _, id := range ids {
		snap, _, err := progress.WaitFinished(ctx, b, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State, "task %s", id)
	}

	_, err = b.Admit(ctx, map[string]queue.Limit{"capped": {}})
	require.NoError(t, err)
	for _, key := range []string{gate, slots} {
		n, err := srv.Do("EXISTS", key).AsInt64()
		require.NoError(t, err)
		assert.Zero(t, n, "%s is gone", key)
	}
}

// TestDrainBesideWorkerWithLimits: while a worker that still has a flow's
// limits runs beside one without, the drain of the flow's gate lets its
// tasks through without touching the first's count: the slot and the
// start of the task it let through stay, the tasks drained take none,
// and its next admit finds the slot taken.
func TestDrainBesideWorkerWithLimits(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	l := queue.Limit{Concurrency: 1, Rate: 5, Per: time.Minute}
	for range 3 {
		require.NoError(t, b.Enqueue(ctx, rateTask("mixed", l)))
	}
	prefix := b.Prefix() + ":{q:default}:limit:"
	count := func(key string) int64 {
		t.Helper()
		n, err := srv.Do("ZCARD", prefix+key+":mixed").AsInt64()
		require.NoError(t, err)
		return n
	}
	require.EqualValues(t, 2, count("gate"), "one let through, two wait")
	held, err := b.Fetch(ctx, "old", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, held, 1, "the worker with the limits holds the one let through")

	_, err = b.Admit(ctx, map[string]queue.Limit{"mixed": {}})
	require.NoError(t, err)
	assert.Zero(t, count("gate"), "the drain lets both waiting tasks through")
	assert.EqualValues(t, 1, count("slots"), "the slot of the task leased stays")
	assert.EqualValues(t, 1, count("starts"), "its start stays")

	_, err = b.Admit(ctx, map[string]queue.Limit{"mixed": l})
	require.NoError(t, err)
	assert.EqualValues(t, 1, count("slots"), "the admit with the limits still counts the slot")
	ttl, err := srv.Do("PTTL", prefix+"slots:mixed").AsInt64()
	require.NoError(t, err)
	assert.Positive(t, ttl, "the slots set expires, unless admits with the limit go on")
	drained, err := b.Fetch(ctx, "new", 2, time.Minute)
	require.NoError(t, err)
	assert.Len(t, drained, 2)
	assert.EqualValues(t, 1, count("slots"), "the tasks drained take no slot")
	assert.EqualValues(t, 1, count("starts"), "nor a start of the rate")
}
