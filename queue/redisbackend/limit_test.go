package redisbackend_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
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
	later := strconv.FormatInt(redisClock(t, srv)+time.Hour.Milliseconds(), 10)
	unstarted, err := srv.Do("ZRANGEBYSCORE", starts, later, "+inf").AsStrSlice()
	require.NoError(t, err)
	require.Len(t, unstarted, 1, "one start, let through, not started yet")

	// That version's fetch read the entry for its worker, and did no more.
	require.NoError(t, srv.Do("XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM").Error())
	require.NoError(t, srv.Do("XREADGROUP", "GROUP", "workers", "old", "COUNT", "1", "STREAMS", stream, ">").Error())
	admitUntil(t, b, limit, srv, []string{"XLEN", stream}, 2, "the second task is let through")
	score, err := srv.Do("ZSCORE", starts, unstarted[0]).AsFloat64()
	if !rueidis.IsRedisNil(err) { // still in the window
		require.NoError(t, err)
		assert.LessOrEqual(t, score, float64(redisClock(t, srv)), "the start is scored")
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

// redisClock returns the clock of srv in Unix ms.
func redisClock(t testing.TB, srv *redistest.Server) int64 {
	t.Helper()
	clock, err := srv.Do("TIME").AsIntSlice()
	require.NoError(t, err)
	return clock[0]*1000 + clock[1]/1000
}

// TestRateStartsLeasedUnscoredAmongUnstarted: of the tasks one admit let
// through (their entries most likely made in one millisecond), the one an
// earlier version's fetch leased has its start scored by the next admit,
// and the others, not delivered yet, stay not started: the admit tells
// entries delivered from the others by their ids, sequence included.
func TestRateStartsLeasedUnscoredAmongUnstarted(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	const n = 12
	limit := queue.Limit{Rate: n, Per: time.Hour}
	stream := b.Prefix() + ":{q:default}:stream"
	starts := b.Prefix() + ":{q:default}:limit:starts:quota"
	tasks := make([]*queue.Task, n)
	for i := range tasks {
		tasks[i] = rateTask("quota", limit)
		require.NoError(t, srv.Do("ZADD", b.Prefix()+":{q:default}:limit:gate:quota", "0", tasks[i].ID).Error())
	}
	_, err := b.Admit(ctx, map[string]queue.Limit{"quota": limit})
	require.NoError(t, err)
	entries, err := srv.Do("ZRANGE", starts, "0", "-1").AsStrSlice()
	require.NoError(t, err)
	require.Len(t, entries, n, "every task let through at once")

	// That version's fetch read the first 10 entries, and did no more (in
	// one millisecond, the ids of the last two, T-10 and T-11, sort before
	// T-2 as strings).
	require.NoError(t, srv.Do("XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM").Error())
	require.NoError(t, srv.Do("XREADGROUP", "GROUP", "workers", "old", "COUNT", "10", "STREAMS", stream, ">").Error())
	_, err = b.Admit(ctx, map[string]queue.Limit{"quota": limit})
	require.NoError(t, err)

	later := redisClock(t, srv) + time.Hour.Milliseconds()
	order, err := srv.Do("XRANGE", stream, "-", "+").ToArray()
	require.NoError(t, err)
	require.Len(t, order, n)
	for i, e := range order {
		entry, err := e.ToArray()
		require.NoError(t, err)
		id, err := entry[0].ToString()
		require.NoError(t, err)
		score, err := srv.Do("ZSCORE", starts, id).AsFloat64()
		require.NoError(t, err)
		if i < 10 {
			assert.Less(t, score, float64(later), "entry %d (%s), delivered: its start is scored", i, id)
		} else {
			assert.Greater(t, score, float64(later), "entry %d (%s), not delivered: not started", i, id)
		}
	}
}

// BenchmarkAdmitWithUnstartedStarts: the cost of a worker's Admit for a
// flow whose rate is taken by tasks let through that no worker has leased
// yet (a backlog: workers busy or not running), by how many there are.
// redis-µs/op is the time Redis spent in the admit script (INFO
// commandstats): Redis runs nothing else meanwhile.
func BenchmarkAdmitWithUnstartedStarts(b *testing.B) {
	for _, n := range []int{10, 1000, 5000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			srv := redistest.Start(b)
			backend := newBackend(b, newClient(b, srv), redisbackend.Config{})
			ctx := context.Background()
			limit := queue.Limit{Rate: n, Per: time.Hour}
			limits := map[string]queue.Limit{"quota": limit}
			gate := backend.Prefix() + ":{q:default}:limit:gate:quota"
			for i := 0; i <= n; i++ { // one more than the rate lets through: it waits
				require.NoError(b, srv.Do("ZADD", gate, "0", queue.NewID()).Error())
			}
			for i := 0; i < n; i += 100 {
				_, err := backend.Admit(ctx, limits)
				require.NoError(b, err)
			}
			require.NoError(b, srv.Do("CONFIG", "RESETSTAT").Error())
			b.ResetTimer()
			for b.Loop() {
				_, err := backend.Admit(ctx, limits)
				require.NoError(b, err)
			}
			b.StopTimer()
			b.ReportMetric(evalshaStat(b, srv, "usec_per_call"), "redis-µs/op")
		})
	}
}

// TestRateStartScoredByItsFetch: the fetch that leases a task let through
// by its flow's rate scores the task's start with the lease's time itself,
// on a single Redis and on a Cluster (where the starts set is a key the
// fetch script builds from the entry, under the queue's hash tag): no
// admit runs between, which would otherwise score it later, with its own
// clock.
func TestRateStartScoredByItsFetch(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "Single", true: "Cluster"}[cluster], func(t *testing.T) {
			t.Parallel()
			var client rueidis.Client
			if cluster {
				client = newClusterClient(t, redistest.StartCluster(t, redistest.ClusterOptions{}))
			} else {
				client = newClient(t, redistest.Start(t))
			}
			b := newBackend(t, client, redisbackend.Config{})
			ctx := context.Background()
			starts := b.Prefix() + ":{q:default}:limit:starts:quota"
			clock := func() float64 {
				now, err := client.Do(ctx, client.B().Time().Build()).AsIntSlice()
				require.NoError(t, err)
				return float64(now[0]*1000 + now[1]/1000)
			}
			task := rateTask("quota", queue.Limit{Rate: 2, Per: time.Hour})
			require.NoError(t, b.Enqueue(ctx, task))
			members, err := client.Do(ctx, client.B().Zrange().Key(starts).Min("0").Max("-1").Build()).AsStrSlice()
			require.NoError(t, err)
			require.Len(t, members, 1, "the task let through holds a start")
			before := clock()

			leases, err := b.Fetch(ctx, "w", 1, time.Minute)
			require.NoError(t, err)
			require.Len(t, leases, 1)
			require.Equal(t, task.ID, leases[0].Task.ID)
			score, err := client.Do(ctx, client.B().Zscore().Key(starts).Member(members[0]).Build()).AsFloat64()
			require.NoError(t, err)
			assert.GreaterOrEqual(t, score, before, "scored by the lease, not before it")
			assert.LessOrEqual(t, score, clock(), "scored by the fetch")
		})
	}
}

// TestRateStartScoringCannotFailTheFetch: a fetch whose scoring of a
// start fails (here the flow's starts set is a string: WRONGTYPE; on a
// Cluster, the starts set moved away while the queue's slot migrates)
// still leases the task it read: its token is in the leases set, and the
// lease acknowledges. Before, the failed ZADD aborted the script after
// XREADGROUP had delivered the entry: pending for the worker with no
// token, which nothing took back.
func TestRateStartScoringCannotFailTheFetch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	stream := b.Prefix() + ":{q:default}:stream"
	leases := b.Prefix() + ":{q:default}:leased"
	starts := b.Prefix() + ":{q:default}:limit:starts:quota"
	task := rateTask("quota", queue.Limit{Rate: 1, Per: time.Hour})
	require.NoError(t, b.Enqueue(ctx, task))
	n, err := srv.Do("XLEN", stream).AsInt64()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the task is let through")
	require.NoError(t, srv.Do("DEL", starts).Error())
	require.NoError(t, srv.Do("SET", starts, "not a sorted set").Error())

	got, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, task.ID, got[0].Task.ID)
	held, err := srv.Do("ZRANGE", leases, "0", "-1").AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{got[0].Token}, held, "the lease's token is in the leases set")
	require.NoError(t, b.Ack(ctx, got[0]))
	pending, err := srv.Do("XPENDING", stream, "workers").ToArray()
	require.NoError(t, err)
	left, err := pending[0].AsInt64()
	require.NoError(t, err)
	assert.Zero(t, left, "acknowledged")
}

// TestRateStartsExpireOnceTheRateIsGone: a flow's starts set that holds
// starts not started (tasks let through, not leased yet) lives twice the
// retention (or the rate's period if longer) past the admit that last
// saw it with its rate, renewed by each: the set of a flow whose rate is
// removed from the registry meanwhile (no admit names it with a rate
// again) expires, where it was kept for ever. Neither an admit of the
// flow without its rate (it keeps a concurrency) nor the fetches that
// start its tasks let through keep it. With the rate on and every start
// started, it still expires a period after its last start.
func TestRateStartsExpireOnceTheRateIsGone(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const retention = time.Hour
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Retention: retention})
	ctx := context.Background()
	limit := queue.Limit{Rate: 5, Per: time.Minute}
	starts := b.Prefix() + ":{q:default}:limit:starts:quota"
	pttl := func() time.Duration {
		ms, err := srv.Do("PTTL", starts).AsInt64()
		require.NoError(t, err)
		return time.Duration(ms) * time.Millisecond
	}
	for range 2 {
		require.NoError(t, b.Enqueue(ctx, rateTask("quota", limit)))
	}
	n, err := srv.Do("ZCARD", starts).AsInt64()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "two starts let through, not started")
	keep := pttl()
	assert.Greater(t, keep, retention, "the set expires, after the retention")
	assert.LessOrEqual(t, keep, 2*retention)

	// The rate is gone: the flow keeps a concurrency limit, then none.
	_, err = b.Admit(ctx, map[string]queue.Limit{"quota": {Concurrency: 3}})
	require.NoError(t, err)
	assert.Greater(t, pttl(), time.Duration(0), "an admit without the rate leaves the expiry")
	leases, err := b.Fetch(ctx, "w", 2, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 2)
	assert.Greater(t, pttl(), time.Duration(0), "the fetch that starts the tasks leaves the expiry")

	// The rate again, every start started: a period after the last.
	_, err = b.Admit(ctx, map[string]queue.Limit{"quota": limit})
	require.NoError(t, err)
	left := pttl()
	assert.Greater(t, left, time.Duration(0))
	assert.LessOrEqual(t, left, limit.Per)
}
