package redisbackend_test

import (
	"context"
	"encoding/json"
	"log/slog"
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

// TestLimitedEnqueueWaitsForTheReplica: in durable mode a task of a
// limited flow is in its flow's gate on the replica when Enqueue returns,
// and an enqueue the replica cannot confirm fails.
func TestLimitedEnqueueWaitsForTheReplica(t *testing.T) {
	t.Parallel()
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

// wrappedBackend is what a host's wrapper of the backend looks like: it
// passes on the Backend methods, and the optional interfaces it is told
// to (nil: hidden from the worker).
type wrappedBackend struct {
	queue.Backend
	queue.WorkerRegistry
	queue.Retirer
	admitter queue.Admitter
}

// wrapperWithAdmit is a wrappedBackend that passes Admit on too.
type wrapperWithAdmit struct{ *wrappedBackend }

func (w wrapperWithAdmit) Admit(ctx context.Context, limits map[string]queue.Limit) (time.Duration, error) {
	return w.admitter.Admit(ctx, limits)
}

// TestWrappedBackendKeepsLimitsMovingWithAdmit runs the tasks of a flow
// limited to one at a time by a worker given a wrapper of the backend
// that passes Admitter through (as queue.Admitter asks): each task waits
// in the gate for the slot of the one before and starts when it frees
// up, so all end. A wrapper that hides it leaves them waiting: the last
// two have not started a second after the first ended.
func TestWrappedBackendKeepsLimitsMovingWithAdmit(t *testing.T) {
	t.Parallel()
	for _, passAdmit := range []bool{true, false} {
		t.Run(map[bool]string{true: "passed through", false: "hidden"}[passAdmit], func(t *testing.T) {
			b := newBackend(t, newClient(t, redistest.Start(t)), redisbackend.Config{})
			reg := registry.New()
			reg.MustRegister("one", reportingFlow, registry.Concurrency(1))
			broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			var ids []string
			for range 3 {
				id, err := broker.Enqueue(ctx, "one", json.RawMessage(`{}`), queue.EnqueueOptions{})
				require.NoError(t, err)
				ids = append(ids, id)
			}
			w := &wrappedBackend{Backend: b, WorkerRegistry: b, Retirer: b, admitter: b}
			var backend queue.Backend = w
			if passAdmit {
				backend = wrapperWithAdmit{w}
			}
			startWorker(t, queue.NewWorker(backend, b, queue.WorkerConfig{Registry: reg, Logger: slog.New(slog.DiscardHandler)}))

			snap, _, err := progress.WaitFinished(ctx, b, ids[0])
			require.NoError(t, err)
			require.Equal(t, progress.StateSuccess, snap.State)
			if !passAdmit {
				time.Sleep(time.Second) // the gatekeeper would have called Admit by now
				for _, id := range ids[1:] {
					assert.Equal(t, progress.StatePending, state(t, b, id), "waits in the gate: nothing admits it")
				}
				return
			}
			for _, id := range ids[1:] {
				snap, _, err := progress.WaitFinished(ctx, b, id)
				require.NoError(t, err)
				assert.Equal(t, progress.StateSuccess, snap.State)
			}
		})
	}
}

// TestCancelledHandBackOfLimitedFlowWaitsItsTime: a task of a limited
// flow whose lease tells it was cancelled, handed back because the
// progress store is down, waits for the time its worker asked for
// outside its flow's gate (it needs no slot), not ready at once; a retry
// of its flow is ready at once.
func TestCancelledHandBackOfLimitedFlowWaitsItsTime(t *testing.T) {
	t.Parallel()
	for _, why := range []queue.AttemptEnd{queue.EndStoreDown, queue.EndFailed} {
		t.Run(string(why), func(t *testing.T) {
			b := newBackend(t, newClient(t, redistest.Start(t)), redisbackend.Config{})
			ctx := context.Background()
			limit := queue.Limit{Concurrency: 1}
			limits := map[string]queue.Limit{"one": limit}
			task := &queue.Task{ID: queue.NewID(), Flow: "one", Inputs: json.RawMessage(`{}`), MaxAttempts: 3,
				Timeout: time.Minute, EnqueuedAt: time.Now(), Limit: limit}
			require.NoError(t, b.Enqueue(ctx, task))
			_, err := b.Admit(ctx, limits)
			require.NoError(t, err)
			require.NoError(t, b.Cancel(ctx, task.ID))
			leases, err := b.Fetch(ctx, "w", 1, time.Minute)
			require.NoError(t, err)
			require.Len(t, leases, 1)
			l := leases[0]
			require.True(t, l.Task.Cancelled)
			l.Task.Limit = limit // as a worker sets it

			require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), why))
			_, err = b.Admit(ctx, limits)
			require.NoError(t, err)
			wait, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			leases, err = b.Fetch(wait, "w", 1, time.Minute)
			if why.Counts() {
				require.NoError(t, err, "a cancelled task given back for its flow is ready at once")
				require.Len(t, leases, 1)
				assert.True(t, leases[0].Task.Cancelled)
				return
			}
			require.ErrorIs(t, err, context.DeadlineExceeded, "fetched %d", len(leases))
			d, err := b.Depth(ctx)
			require.NoError(t, err)
			assert.Equal(t, queue.Depth{Delayed: 1}, d, "waits for its time, in the delayed set")
		})
	}
}
