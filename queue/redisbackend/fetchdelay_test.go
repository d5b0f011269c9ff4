package redisbackend_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// The tests of Config.FetchDelay: a Fetch that would wait for work first
// lets tasks gather, then takes them together.

// delay100 is the FetchDelay of the tests of its pace.
const delay100 = 100 * time.Millisecond

// TestFetchDelayTakesGatheredTasksInOneLook has a worker's Fetch find the
// queue empty, so that its next one waits, and enqueues ten tasks one by
// one while that next Fetch lets them gather (its sleep is the test's:
// no timing is involved). The Fetch takes all ten in one round trip, one
// wait and one fetch script, where a Fetch waiting as they arrive would
// have been woken by the first and taken it alone.
func TestFetchDelayTakesGatheredTasksInOneLook(t *testing.T) {
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{FetchDelay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "w", 16, time.Minute) // takes it, and plans to wait
	require.NoError(t, err)
	require.Len(t, first, 1)

	const n = 10
	want := map[string]bool{}
	slept := 0
	defer redisbackend.SetFetchSleep(func(ctx context.Context, d time.Duration) bool {
		slept++
		assert.LessOrEqual(t, d, time.Second, "never longer than the plan's second")
		for range n {
			task := newTask()
			require.NoError(t, b.Enqueue(ctx, task))
			want[task.ID] = true
		}
		require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
		return true
	})()
	before := counter.Trips()
	leases, err := b.Fetch(ctx, "w", 16, time.Minute)
	require.NoError(t, err)
	calls := commandCalls(t, srv)
	trips := counter.Trips() - before - n // the enqueues' own

	require.Equal(t, 1, slept, "the Fetch let tasks gather once")
	got := map[string]bool{}
	for _, l := range leases {
		got[l.Task.ID] = true
	}
	assert.Equal(t, want, got, "every task gathered is taken")
	assert.EqualValues(t, 1, trips, "one round trip: the wait and the script together")
	assert.Equal(t, 1, calls["xread"], "one wait")
	assert.Equal(t, 1, calls["evalsha"], "one fetch script")
	assert.Equal(t, 1, calls["xreadgroup"], "one read of the stream")
	assert.Equal(t, 1, calls["zadd"], "one ZADD of the lease deadlines")
	assert.Equal(t, n, calls["hincrby"], "each task's attempt")
}

// TestFetchCancelledInItsDelayLeasesNothing cancels a Fetch while it lets
// tasks gather: it returns at once with the context's error and holds no
// task, and the task enqueued meanwhile goes to the next Fetch.
func TestFetchCancelledInItsDelayLeasesNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{FetchDelay: time.Hour})
	ctx := context.Background()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "w", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 1)

	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	var leases []*queue.Lease
	go func() {
		var err error
		leases, err = b.Fetch(cctx, "w", 4, time.Minute)
		done <- err
	}()
	task := newTask()
	require.NoError(t, b.Enqueue(ctx, task))
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Empty(t, leases)
	assert.Zero(t, pendingEntries(t, srv, b.Prefix())-1, "only the first task is leased")

	next, err := b.Fetch(ctx, "other", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, next, 1)
	assert.Equal(t, task.ID, next[0].Task.ID)
}

// TestWorkerWithFetchDelayRunsEveryTask runs tasks through a Worker whose
// backend has a FetchDelay, enqueued one by one and in a burst: each runs
// once and succeeds.
func TestWorkerWithFetchDelayRunsEveryTask(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{FetchDelay: 5 * time.Millisecond})
	reg := flowsNamed("report")
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Concurrency: 4, Logger: quiet}))
	ctx := context.Background()
	var ids []string
	for i := range 30 {
		id, err := broker.Enqueue(ctx, "report", []byte(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		ids = append(ids, id)
		if i < 10 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	for _, id := range ids {
		eventually(t, func() bool {
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			return snap.State.Terminal()
		}, "task "+id+" ends")
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "SUCCESS", string(snap.State), "task %s", id)
	}
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "nothing left leased")
}

// TestFetchDelayPace has a worker of a backend with a FetchDelay of
// 100 ms take n tasks at once, then, after some time on a test clock,
// make its next Fetch with a task enqueued. The delay is let pass only
// when the worker's pace expects four tasks or more within it, and only
// what is left of it since the take: forty tasks at once (40 a second)
// then at once, a whole delay; a hundred then 60 ms later, the 40 ms
// left; one task then 50 ms or a second later, or forty then two seconds
// later, none: the Fetch looks at once. Each time it takes the task.
func TestFetchDelayPace(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{FetchDelay: delay100})
	now := time.Now()
	defer redisbackend.SetFetchNow(func() time.Time { return now })()
	var slept []time.Duration
	defer redisbackend.SetFetchSleep(func(_ context.Context, d time.Duration) bool {
		slept = append(slept, d)
		return true
	})()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, c := range []struct {
		name  string
		n     int
		after time.Duration
		want  []time.Duration
	}{
		{"forty, at once", 40, 0, []time.Duration{delay100}},
		{"a hundred, 60 ms later", 100, 60 * time.Millisecond, []time.Duration{40 * time.Millisecond}},
		{"one, 50 ms later", 1, 50 * time.Millisecond, nil},
		{"one, a second later", 1, time.Second, nil},
		{"forty, two seconds later", 40, 2 * time.Second, nil},
	} {
		worker := c.name
		for range c.n {
			require.NoError(t, b.Enqueue(ctx, newTask()))
		}
		first, err := b.Fetch(ctx, worker, 128, time.Minute)
		require.NoError(t, err)
		require.Len(t, first, c.n, c.name)
		now = now.Add(c.after)

		slept = nil
		task := newTask()
		require.NoError(t, b.Enqueue(ctx, task))
		next, err := b.Fetch(ctx, worker, 4, time.Minute)
		require.NoError(t, err)
		require.Len(t, next, 1, c.name)
		assert.Equal(t, task.ID, next[0].Task.ID, c.name)
		assert.Equal(t, c.want, slept, c.name)
	}
}

// TestFetchDelayLeavesALookWithinTheDeadline gives a Fetch with a long
// FetchDelay a context with a short deadline, and enqueues a task as it
// starts: the Fetch sleeps half the time left at most, then looks, and
// returns the task; a sleep up to the deadline would have ended the
// call with the context's error and no look at all.
func TestFetchDelayLeavesALookWithinTheDeadline(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{FetchDelay: time.Hour})
	ctx := context.Background()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "w", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 1)

	task := newTask()
	require.NoError(t, b.Enqueue(ctx, task))
	const limit = 400 * time.Millisecond
	dctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	next, err := b.Fetch(dctx, "w", 4, time.Minute)
	require.NoError(t, err, "the Fetch looked before its deadline")
	require.Len(t, next, 1)
	assert.Equal(t, task.ID, next[0].Task.ID)
}
