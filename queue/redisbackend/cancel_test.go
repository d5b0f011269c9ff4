package redisbackend_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// TestMissedCancellationStopsRun: a running task whose cancellation never
// reached the worker's pub/sub connection (published while it
// reconnected) is still stopped, by the lease's heartbeat, and ends
// FAILURE "Cancelled".
func TestMissedCancellationStopsRun(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	web := newBackend(t, newClient(t, srv), cfg)
	workerSide := newBackend(t, newClient(t, srv), cfg)
	reg := registry.New()
	broker := queue.NewBroker(web, nil, queue.BrokerConfig{Registry: reg})

	started := make(chan struct{})
	var once sync.Once
	reg.MustRegister("wait", flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	startWorker(t, queue.NewWorker(workerSide, nil, queue.WorkerConfig{
		Registry: reg, Lease: 300 * time.Millisecond, Logger: quiet,
	}))

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	id, err := broker.Enqueue(ctx, "wait", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	select {
	case <-started:
	case <-ctx.Done():
		require.FailNow(t, "the flow did not start")
	}

	// What Cancel does, less the SPUBLISH the worker would have missed.
	require.NoError(t, srv.Do("HSET", cfg.Prefix+":{"+id+"}:task", "cancelled", "1").Error())

	var snap progress.Snapshot
	eventually(t, func() bool {
		snap, _, err = web.Snapshot(ctx, id)
		return err == nil && snap.State.Terminal()
	}, "the run was not stopped")
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
	assert.Empty(t, mustDead(t, web), "a cancelled task is not buried")
}

func mustDead(t *testing.T, b *redisbackend.Backend) []queue.DeadTask {
	t.Helper()
	dead, err := b.Dead(context.Background(), 0)
	require.NoError(t, err)
	return dead
}
