package redisbackend_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
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

// rateTask returns a task of flow with the limit l, as a Broker would
// enqueue it.
func rateTask(flow string, l queue.Limit) *queue.Task {
	return &queue.Task{ID: queue.NewID(), Flow: flow, Inputs: json.RawMessage(`{}`), MaxAttempts: 3,
		Timeout: time.Minute, EnqueuedAt: time.Now(), Limit: l}
}

// admitUntil runs Admit for the flow "quota", limited by l, until the
// integer reply of the command cmd on srv is want.
func admitUntil(t *testing.T, b *redisbackend.Backend, l queue.Limit, srv *redistest.Server, cmd []string, want int64, msg string) {
	t.Helper()
	eventually(t, func() bool {
		_, err := b.Admit(context.Background(), map[string]queue.Limit{"quota": l})
		require.NoError(t, err)
		n, err := srv.Do(cmd...).AsInt64()
		require.NoError(t, err)
		return n == want
	}, msg)
}

// TestRateStartLeasedUnscored: a task let through whose entry a worker
// of a version before 2026-12-07 leased (a fetch that does not score its
// start in the flow's starts set) does not hold its flow's rate for ever:
// the admit script that finds its entry delivered scores its start with
// its own clock, and the next task is let through once that has left the
// window.
func TestRateStartLeasedUnscored(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	limit := queue.Limit{Rate: 1, Per: 100 * time.Millisecond}
	stream := b.Prefix() + ":{q:default}:stream"
	starts := b.Prefix() + ":{q:default}:limit:starts:quota"
	first, second := rateTask("quota", limit), rateTask("quota", limit)
	require.NoError(t, b.Enqueue(ctx, first))
	require.NoError(t, b.Enqueue(ctx, second))
	unstarted, err := srv.Do("ZRANGEBYSCORE", starts, "+inf", "+inf").AsStrSlice()
	require.NoError(t, err)
	require.Len(t, unstarted, 1, "one start, let through, not started yet")

	// That version's fetch read the entry for its worker, and did no more.
	require.NoError(t, srv.Do("XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM").Error())
	require.NoError(t, srv.Do("XREADGROUP", "GROUP", "workers", "old", "COUNT", "1", "STREAMS", stream, ">").Error())
	admitUntil(t, b, limit, srv, []string{"XLEN", stream}, 2, "the second task is let through")
	score, err := srv.Do("ZSCORE", starts, unstarted[0]).ToString()
	if err == nil { // still in the window
		assert.NotEqual(t, "inf", score, "the start is scored")
	}
}

// TestRateStartsOfEarlierVersionCount: the starts a version before
// 2026-12-07 wrote, scored by when their tasks were let through, keep
// counting in their window, and leave it as they did.
func TestRateStartsOfEarlierVersionCount(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	limit := queue.Limit{Rate: 1, Per: 300 * time.Millisecond}
	gate := b.Prefix() + ":{q:default}:limit:gate:quota"
	starts := b.Prefix() + ":{q:default}:limit:starts:quota"
	clock, err := srv.Do("TIME").AsIntSlice()
	require.NoError(t, err)
	ms := strconv.FormatInt(clock[0]*1000+clock[1]/1000, 10)
	require.NoError(t, srv.Do("ZADD", starts, ms, "1-1").Error())
	require.NoError(t, srv.Do("PEXPIRE", starts, "300").Error())

	task := rateTask("quota", limit)
	require.NoError(t, b.Enqueue(context.Background(), task))
	ids, err := srv.Do("ZRANGE", gate, "0", "-1").AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{task.ID}, ids, "the earlier start holds the window")
	admitUntil(t, b, limit, srv, []string{"ZCARD", gate}, 0, "the task is let through once the earlier start has left the window")
}

// TestRateSlotOfExpiredTask: a task let through whose record expired
// before a worker leased it (its entry is dropped, unrun) does not hold
// its flow's rate for ever: its drop counts as its start, and the next
// task runs.
func TestRateSlotOfExpiredTask(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	reg := registry.New()
	reg.MustRegister("quota", reportingFlow, registry.Rate(1, 100*time.Millisecond))
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	expired, err := broker.Enqueue(ctx, "quota", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	next, err := broker.Enqueue(ctx, "quota", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	require.NoError(t, srv.Do("DEL", b.Prefix()+":{"+expired+"}:task").Error())

	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Logger: slog.New(slog.DiscardHandler)}))
	snap, _, err := progress.WaitFinished(ctx, b, next)
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State, "%q", snap.Details.Status)
}
