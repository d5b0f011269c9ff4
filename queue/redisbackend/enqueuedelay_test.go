package redisbackend_test

import (
	"context"
	"encoding/json"
	"sync"
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

// The tests of Config.EnqueueDelay: a CreateAndEnqueue that would run
// alone first lets others join it, and they share one script. The linger
// is timed by the test (SetLingerTimer): no timing is involved.

// lingerByHand makes every linger of the backends end when the returned
// function is called (or never, if it is not), until the test ends; the
// channel receives each linger's length.
func lingerByHand(t *testing.T) (end func(), asked chan time.Duration) {
	t.Helper()
	ended := make(chan time.Time)
	asked = make(chan time.Duration, 64)
	t.Cleanup(redisbackend.SetLingerTimer(func(d time.Duration) (<-chan time.Time, func() bool) {
		asked <- d
		return ended, func() bool { return true }
	}))
	var once sync.Once
	return func() { once.Do(func() { close(ended) }) }, asked
}

// lingering waits until n creates of b wait for their batch.
func lingering(t *testing.T, b *redisbackend.Backend, n int) {
	t.Helper()
	require.Eventually(t, func() bool { _, _, creates := b.Waiting(); return creates == n },
		waitLimit, time.Millisecond, "%d creates waiting", n)
}

// fetchAll takes every task ready on b's queue and returns their ids.
func fetchAll(t *testing.T, b *redisbackend.Backend) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	got := map[string]bool{}
	for {
		short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
		leases, err := b.Fetch(short, "w", 128, time.Minute)
		stop()
		if len(leases) == 0 {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return got
		}
		for _, l := range leases {
			got[l.Task.ID] = true
		}
	}
}

// TestEnqueueDelayCreatesShareAScript makes ten CreateAndEnqueues one
// after the other while the first lingers: they are created and queued
// in one round trip, one script and two ZADDs into the task index, where
// without the delay each would have gone alone (eight commands, one of
// them the script, each). None is lost.
func TestEnqueueDelayCreatesShareAScript(t *testing.T) {
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{EnqueueDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.CreateAndEnqueue(ctx, newTask())) // loads the script, lingering 100 ms
	fetchAll(t, b)

	end, asked := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	before := counter.Trips()
	const n = 10
	want := map[string]bool{}
	errs := make(chan error, n)
	for i := range n {
		task := newTask()
		want[task.ID] = true
		go func() { errs <- b.CreateAndEnqueue(context.Background(), task) }()
		lingering(t, b, i+1)
	}
	assert.Equal(t, 100*time.Millisecond, <-asked, "the first lingers for the delay")
	assert.Empty(t, asked, "the others join it")
	end()
	for range n {
		require.NoError(t, <-errs)
	}
	calls := commandCalls(t, srv)
	assert.EqualValues(t, 1, counter.Trips()-before, "one round trip")
	assert.Equal(t, 1, calls["evalsha"], "one create script")
	assert.Equal(t, n, calls["xadd"], "each task queued")
	assert.Equal(t, n, calls["exists"], "each task's id checked")
	assert.Equal(t, 2, calls["zadd"], "one ZADD into the queue's index, one into the flow's")
	assert.Equal(t, want, fetchAll(t, b), "every task queued once")
}

// TestEnqueueDelayKeyedEnqueuesShareAScript: enqueues with idempotency
// keys linger and share one create script as others do, the key's claim
// and the queue entry in one step; a second enqueue with a key the batch
// holds already is refused by the script and answered with the same task
// after a read of it.
func TestEnqueueDelayKeyedEnqueuesShareAScript(t *testing.T) {
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{EnqueueDelay: 100 * time.Millisecond})
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "warm"}) // loads the script
	require.NoError(t, err)
	fetchAll(t, b)

	end, asked := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	before := counter.Trips()
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k0"}
	type result struct {
		key, id string
		err     error
	}
	results := make(chan result, len(keys))
	for i, key := range keys {
		go func() {
			id, err := broker.Enqueue(context.Background(), "f", json.RawMessage(`{"x":1}`), queue.EnqueueOptions{IdempotencyKey: key})
			results <- result{key, id, err}
		}()
		lingering(t, b, i+1)
	}
	assert.Equal(t, 100*time.Millisecond, <-asked, "the first lingers for the delay")
	end()
	want := map[string]bool{}
	for range keys {
		r := <-results
		require.NoError(t, r.err, r.key)
		assert.Equal(t, queue.IdempotentID("", r.key), r.id, r.key)
		want[r.id] = true
	}
	calls := commandCalls(t, srv)
	assert.Equal(t, 1, calls["evalsha"], "one create script for all")
	assert.Equal(t, len(want), calls["xadd"], "each key's task queued once")
	assert.EqualValues(t, 2, counter.Trips()-before, "the batch, and the read of the task of the key it held twice")
	assert.Equal(t, want, fetchAll(t, b), "every key's task queued once")
}

// TestEnqueueDelayBatchChecksTheIdsItIsGiven makes creates of three kinds
// share one create script: two Broker.Enqueues, whose ids the Broker drew
// (queue.NewID) and no other task can have, one with an idempotency key
// and two Backend.CreateAndEnqueues, ids that come from their callers,
// one of them taken by a task that has ended. The script checks the ids
// of the last three only, and refuses the one taken, leaving its task as
// it was; the others are created and queued.
func TestEnqueueDelayBatchChecksTheIdsItIsGiven(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{EnqueueDelay: 100 * time.Millisecond})
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	taken := newTask()
	require.NoError(t, b.CreateAndEnqueue(ctx, taken)) // loads the script, lingering 100 ms
	fetchAll(t, b)
	_, err := b.Append(ctx, taken.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
	require.NoError(t, err)

	end, _ := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	given := newTask()
	creates := []struct {
		name string
		op   func() (string, error)
	}{
		{"drawn", func() (string, error) { return broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{}) }},
		{"taken", func() (string, error) { return taken.ID, b.CreateAndEnqueue(ctx, taken) }},
		{"keyed", func() (string, error) {
			return broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "k"})
		}},
		{"given", func() (string, error) { return given.ID, b.CreateAndEnqueue(ctx, given) }},
		{"drawn too", func() (string, error) { return broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{}) }},
	}
	type result struct {
		name, id string
		err      error
	}
	results := make(chan result, len(creates))
	for i, c := range creates {
		go func() {
			id, err := c.op()
			results <- result{c.name, id, err}
		}()
		lingering(t, b, i+1)
	}
	end()
	want := map[string]bool{}
	for range creates {
		r := <-results
		if r.name == "taken" {
			assert.ErrorIs(t, r.err, progress.ErrExists, "an id taken is refused")
			continue
		}
		require.NoError(t, r.err, r.name)
		want[r.id] = true
	}
	calls := commandCalls(t, srv)
	assert.Equal(t, 1, calls["evalsha"], "one create script for all")
	assert.Equal(t, 3, calls["exists"], "the ids given checked (the taken one, the key's, the caller's), not the two the Broker drew")
	assert.Equal(t, len(want), calls["xadd"], "each task created queued, the refused one not")
	snap, _, err := b.Snapshot(ctx, taken.ID)
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State, "the task taken is left as it was")
	assert.Equal(t, want, fetchAll(t, b), "every task created queued once")
}

// TestEnqueueDelayCancelledCreateWritesNothing cancels creates while they
// linger: the first, which lingers, and one that joined it. Neither is
// written; the one that stays is created and queued without waiting for
// the linger to end.
func TestEnqueueDelayCancelledCreateWritesNothing(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{EnqueueDelay: time.Second})
	lingerByHand(t) // never ends
	first, joined, stays := newTask(), newTask(), newTask()
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	errs := make([]chan error, 3)
	for i, c := range []struct {
		ctx  context.Context
		task *queue.Task
	}{{ctx1, first}, {ctx2, joined}, {context.Background(), stays}} {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- b.CreateAndEnqueue(c.ctx, c.task) }()
		lingering(t, b, i+1)
	}
	cancel2()
	assert.ErrorIs(t, <-errs[1], context.Canceled)
	cancel1()
	assert.ErrorIs(t, <-errs[0], context.Canceled)
	require.NoError(t, <-errs[2], "the one left goes without the first")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, task := range []*queue.Task{first, joined} {
		_, _, err := b.Snapshot(ctx, task.ID)
		assert.ErrorIs(t, err, progress.ErrNotFound, "a cancelled create writes nothing")
	}
	_, _, err := b.Snapshot(ctx, stays.ID)
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{stays.ID: true}, fetchAll(t, b))
}

// TestCloseSendsLingeringCreates closes a backend while creates linger:
// they are created and queued at once, and a create after Close does
// not linger.
func TestCloseSendsLingeringCreates(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv)
	b := newBackend(t, client, redisbackend.Config{EnqueueDelay: time.Second})
	_, asked := lingerByHand(t) // never ends
	want := map[string]bool{}
	errs := make(chan error, 3)
	for i := range 2 {
		task := newTask()
		want[task.ID] = true
		go func() { errs <- b.CreateAndEnqueue(context.Background(), task) }()
		lingering(t, b, i+1)
	}
	require.NoError(t, b.Close())
	for range 2 {
		require.NoError(t, <-errs)
	}
	late := newTask()
	want[late.ID] = true
	require.NoError(t, b.CreateAndEnqueue(context.Background(), late), "no linger after Close")
	assert.Len(t, asked, 1, "only the first lingered")

	other := newBackend(t, client, redisbackend.Config{Prefix: b.Prefix()})
	assert.Equal(t, want, fetchAll(t, other), "every create queued")
}

// TestEnqueueDelayOnClusterClient checks that a Redis Cluster client,
// whose creates are never batched, takes EnqueueDelay and ignores it: a
// create does not linger.
func TestEnqueueDelayOnClusterClient(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, clusterMode{newClient(t, srv)}, redisbackend.Config{EnqueueDelay: time.Second})
	_, asked := lingerByHand(t) // never ends
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	task := newTask()
	require.NoError(t, b.CreateAndEnqueue(ctx, task))
	assert.Empty(t, asked, "no linger")
	assert.Equal(t, map[string]bool{task.ID: true}, fetchAll(t, b))
}

// heldClient holds its next round trip, once hold is called, until
// the release that hold returned is called.
type heldClient struct {
	rueidis.Client
	mu   sync.Mutex
	gate chan struct{}
	sent chan struct{}
}

// hold makes the next round trip wait until release is called; sent
// is closed when it has begun.
func (c *heldClient) hold() (sent <-chan struct{}, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate, c.sent = make(chan struct{}), make(chan struct{})
	gate := c.gate
	var once sync.Once
	return c.sent, func() { once.Do(func() { close(gate) }) }
}

// wait holds the caller's round trip if hold asked for it.
func (c *heldClient) wait() {
	c.mu.Lock()
	gate, sent := c.gate, c.sent
	c.gate, c.sent = nil, nil
	c.mu.Unlock()
	if gate != nil {
		close(sent)
		<-gate
	}
}

func (c *heldClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.wait()
	return c.Client.Do(ctx, cmd)
}

func (c *heldClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	c.wait()
	return c.Client.DoMulti(ctx, cmds...)
}

// TestEnqueueDelayCreateAfterABatchInFlight makes a create while
// another's batch is in flight: it would go alone after it, and lingers
// as a first create does, so that a create made later shares its script.
func TestEnqueueDelayCreateAfterABatchInFlight(t *testing.T) {
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	held := &heldClient{Client: counter}
	b := newBackend(t, held, redisbackend.Config{EnqueueDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.CreateAndEnqueue(ctx, newTask())) // loads the script, lingering 100 ms
	fetchAll(t, b)

	asked := make(chan func(), 8)
	t.Cleanup(redisbackend.SetLingerTimer(func(time.Duration) (<-chan time.Time, func() bool) {
		ended := make(chan time.Time)
		var once sync.Once
		asked <- func() { once.Do(func() { close(ended) }) }
		return ended, func() bool { return true }
	}))
	nextLinger := func() func() {
		t.Helper()
		select {
		case end := <-asked:
			return end
		case <-ctx.Done():
			require.FailNow(t, "no create lingered")
			return nil
		}
	}
	first, second, third := newTask(), newTask(), newTask()
	errs := make(chan error, 3)
	go func() { errs <- b.CreateAndEnqueue(ctx, first) }()
	sent, release := held.hold()
	nextLinger()()
	<-sent // the first create's batch is in flight
	go func() { errs <- b.CreateAndEnqueue(ctx, second) }()
	lingering(t, b, 1)
	release()
	require.NoError(t, <-errs)

	end := nextLinger() // the second lingers
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	before := counter.Trips()
	go func() { errs <- b.CreateAndEnqueue(ctx, third) }()
	lingering(t, b, 2)
	end()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	assert.EqualValues(t, 1, counter.Trips()-before, "one round trip")
	assert.Equal(t, 1, commandCalls(t, srv)["evalsha"], "one create script")
	assert.Equal(t, map[string]bool{first.ID: true, second.ID: true, third.ID: true}, fetchAll(t, b))
}
