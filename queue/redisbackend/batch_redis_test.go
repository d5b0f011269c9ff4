package redisbackend_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// holdingClient is a round-trip counter that, while held, makes each round
// trip wait until release.
type holdingClient struct {
	redistrips.Client
	mu      sync.Mutex
	gate    chan struct{} // nil: not held
	blocked atomic.Int64
}

func (c *holdingClient) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate = make(chan struct{})
}

func (c *holdingClient) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.gate)
	c.gate = nil
}

func (c *holdingClient) wait() {
	c.mu.Lock()
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		c.blocked.Add(1)
		<-gate
		c.blocked.Add(-1)
	}
}

func (c *holdingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.wait()
	return c.Client.Do(ctx, cmd)
}

func (c *holdingClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	c.wait()
	return c.Client.DoMulti(ctx, cmds...)
}

// TestConcurrentCallsShareRoundTrips checks that Appends, Snapshots, Acks
// and enqueues made while one of the same kind is in flight go together
// in the next round trip, and that each still gets its own answer.
func TestConcurrentCallsShareRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &holdingClient{Client: redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}}
	b := newBackend(t, client, redisbackend.Config{})
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx := context.Background()
	runTask(ctx, t, b) // loads the scripts
	require.NoError(t, b.CreateAndEnqueue(ctx, newTask()))
	warm, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, warm[0]))

	const n = 20
	// batched runs first, which the client holds; then n more calls,
	// which must wait for it; then everything is released. It returns
	// the round trips the n+1 calls took.
	batched := func(t *testing.T, first func() error, call func(i int) error, waiting func() int) int64 {
		t.Helper()
		client.hold()
		before := client.Trips()
		var wg sync.WaitGroup
		wg.Go(func() { assert.NoError(t, first()) })
		require.Eventually(t, func() bool { return client.blocked.Load() == 1 }, 5*time.Second, time.Millisecond)
		for i := range n {
			wg.Go(func() { assert.NoError(t, call(i)) })
		}
		require.Eventually(t, func() bool { return waiting() == n }, 5*time.Second, time.Millisecond)
		client.release()
		wg.Wait()
		return client.Trips() - before
	}

	// Enqueue n+1 tasks through the Broker (CreateAndEnqueue).
	ids := make([]string, n+1)
	enqueue := func(i int) error {
		var err error
		ids[i], err = broker.Enqueue(ctx, "f", json.RawMessage(`{"i":1}`), queue.EnqueueOptions{})
		return err
	}
	trips := batched(t, func() error { return enqueue(n) }, enqueue,
		func() int { _, _, c := b.Waiting(); return c })
	assert.Equal(t, int64(2), trips, "%d enqueues in 2 round trips", n+1)

	var leases []*queue.Lease
	for len(leases) < n+1 {
		got, err := b.Fetch(ctx, "w", n+1, time.Minute)
		require.NoError(t, err)
		leases = append(leases, got...)
	}
	byID := map[string]*queue.Lease{}
	for _, l := range leases {
		byID[l.Task.ID] = l
	}
	for _, id := range ids {
		require.Contains(t, byID, id, "every enqueued task is fetched")
	}

	// Append the n+1 tasks' results: each task's own event.
	appendOne := func(i int) error {
		_, err := b.Append(ctx, ids[i], progress.Event{Type: progress.EventStatus, Status: ids[i]},
			progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)})
		return err
	}
	trips = batched(t, func() error { return appendOne(n) }, appendOne,
		func() int { a, _, _ := b.Waiting(); return a })
	assert.Equal(t, int64(2), trips, "%d appends in 2 round trips", n+1)

	// Read the n+1 snapshots: each task's own.
	snaps := make([]progress.Snapshot, n+1)
	snapshotOne := func(i int) error {
		var err error
		snaps[i], _, err = b.Snapshot(ctx, ids[i])
		return err
	}
	trips = batched(t, func() error { return snapshotOne(n) }, snapshotOne, b.WaitingSnapshots)
	assert.Equal(t, int64(2), trips, "%d snapshot reads in 2 round trips", n+1)
	for i, id := range ids {
		assert.Equal(t, progress.StateSuccess, snaps[i].State)
		assert.Equal(t, id, snaps[i].Details.Status, "each task got its own events")
	}
	// One call of a batch fails alone: the task has finished.
	_, err = b.Append(ctx, ids[0], progress.LogEvent("late"))
	assert.ErrorIs(t, err, progress.ErrFinished)

	// Ack them, one lease being stale.
	stale := *byID[ids[0]]
	stale.Token += "0"
	ackOne := func(i int) error { return b.Ack(ctx, byID[ids[i]]) }
	trips = batched(t, func() error { return ackOne(n) }, ackOne,
		func() int { _, a, _ := b.Waiting(); return a })
	assert.Equal(t, int64(2), trips, "%d acks in 2 round trips", n+1)
	assert.ErrorIs(t, b.Ack(ctx, &stale), queue.ErrLeaseLost)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	leases, err = b.Fetch(short, "w", 1, time.Minute)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "every task acknowledged: nothing left to fetch")
	assert.Empty(t, leases)
}

// clusterMode makes a client look like a Redis Cluster client, whose
// scripts may touch the keys of one slot only.
type clusterMode struct{ rueidis.Client }

func (clusterMode) Mode() rueidis.ClientMode { return rueidis.ClientModeCluster }

// inBothModes runs test as a subtest twice, each on a Backend of its own
// Redis: through a client of a single Redis, and through one that looks
// like a Redis Cluster client (see clusterMode).
func inBothModes(t *testing.T, test func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend)) {
	inBothModesCounted(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, _ bool, _ tripCounter) {
		test(t, srv, b)
	})
}

// tripCounter runs op and returns the round trips it took and its error.
type tripCounter func(op func() error) (int64, error)

// inBothModesCounted is inBothModes with the round trips of the Backend
// counted (see newCounter); cluster tells the mode.
func inBothModesCounted(t *testing.T, test func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, cluster bool, trips tripCounter)) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "single Redis", true: "Cluster client"}[cluster], func(t *testing.T) {
			srv := redistest.Start(t)
			var client rueidis.Client = newClient(t, srv)
			if cluster {
				client = clusterMode{client}
			}
			counter := &redistrips.Client{CountDedicated: true, Client: client}
			trips := func(op func() error) (int64, error) {
				t.Helper()
				before := counter.Trips()
				err := op()
				return counter.Trips() - before, err
			}
			test(t, srv, newBackend(t, counter, redisbackend.Config{}), cluster, trips)
		})
	}
}

// TestClusterClientDoesNotBatch checks that on a Redis Cluster client
// concurrent calls go to Redis each on its own, at once, and that
// AppendAndAck appends and then acknowledges.
func TestClusterClientDoesNotBatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &holdingClient{Client: redistrips.Client{CountDedicated: true, Client: clusterMode{newClient(t, srv)}}}
	b := newBackend(t, client, redisbackend.Config{})
	ctx := context.Background()
	runTask(ctx, t, b) // loads the scripts
	require.NoError(t, b.CreateAndEnqueue(ctx, newTask()))
	warm, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, warm[0]))

	const n = 8
	ids := make([]string, n)
	for i := range ids {
		ids[i] = queue.NewID()
		require.NoError(t, b.Create(ctx, ids[i]))
	}
	client.hold()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := b.Append(ctx, ids[i], progress.LogEvent("one"))
			assert.NoError(t, err)
		})
	}
	require.Eventually(t, func() bool { return client.blocked.Load() == n }, 5*time.Second, time.Millisecond,
		"every Append on its way to Redis at once, none waiting for another")
	appends, _, _ := b.Waiting()
	assert.Zero(t, appends)
	client.release()
	wg.Wait()

	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	require.NoError(t, b.Enqueue(ctx, task))
	before := client.Trips()
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, int64(2), client.Trips()-before, "the fetch script, then the records")
	assert.Equal(t, 1, leases[0].Task.Attempt)
	before = client.Trips()
	_, acked, err := b.AppendAndAck(ctx, leases[0], progress.Event{Type: progress.EventState, State: progress.StateSuccess})
	require.NoError(t, err)
	assert.True(t, acked)
	assert.Equal(t, int64(2), client.Trips()-before, "an Append, then an Ack")
	snap, _, err := b.Snapshot(ctx, task.ID)
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.ErrorIs(t, b.Ack(ctx, leases[0]), queue.ErrLeaseLost, "already acknowledged")
}

// TestCreateAndEnqueueQueues checks that CreateAndEnqueue queues a task
// due now and one due later, on a single Redis (where the script adds the
// first to the stream) and on a Cluster client (where commands behind the
// script do), and that an id taken is refused without a change to its
// task.
func TestCreateAndEnqueueQueues(t *testing.T) {
	t.Parallel()
	inBothModes(t, func(t *testing.T, _ *redistest.Server, b *redisbackend.Backend) {
		ctx := context.Background()
		now, later := newTask(), newTask()
		later.RunAt = time.Now().Add(300 * time.Millisecond)
		require.NoError(t, b.CreateAndEnqueue(ctx, later))
		require.NoError(t, b.CreateAndEnqueue(ctx, now))

		fctx, cancel := context.WithTimeout(ctx, waitLimit)
		defer cancel()
		var got []string
		for len(got) < 2 {
			leases, states, err := b.FetchWithState(fctx, "w", 2, time.Minute)
			require.NoError(t, err)
			require.Len(t, states, len(leases))
			for i, l := range leases {
				got = append(got, l.Task.ID)
				assert.Equal(t, progress.StatePending, states[i])
			}
		}
		assert.Equal(t, []string{now.ID, later.ID}, got, "the one due now first, the other when due")

		_, err := b.Append(ctx, now.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
		require.NoError(t, err)
		err = b.CreateAndEnqueue(ctx, now)
		assert.ErrorIs(t, err, progress.ErrExists)
		snap, _, err := b.Snapshot(ctx, now.ID)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State, "the task taken is left as it was")
	})
}

// TestIdempotencyKeyQueuesOnce: concurrent enqueues with one key queue
// the task once, also on a Cluster client, where the one-step path would
// queue it behind a refused script (see queue.EnqueueOptions).
func TestIdempotencyKeyQueuesOnce(t *testing.T) {
	t.Parallel()
	inBothModes(t, func(t *testing.T, _ *redistest.Server, b *redisbackend.Backend) {
		broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
		ctx := context.Background()
		const n = 20
		ids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var err error
				ids[i], err = broker.Enqueue(ctx, "f", json.RawMessage(`{"x":1}`), queue.EnqueueOptions{IdempotencyKey: "once"})
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		for _, id := range ids {
			assert.Equal(t, queue.IdempotentID("", "once"), id)
		}
		leases, err := b.Fetch(ctx, "w", 10, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		more, err := b.Fetch(short, "w", 10, time.Minute)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "queued once: %d more entries", len(more))
	})
}
