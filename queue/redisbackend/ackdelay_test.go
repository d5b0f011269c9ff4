package redisbackend_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// The tests of Config.AckDelay: an AppendAndAck or Ack that would run
// alone first lets others join it, and they share one script. As in the
// tests of EnqueueDelay, the linger is timed by the test (lingerByHand).

// succeeded is the terminal event of a task that succeeded.
func succeeded() progress.Event {
	return progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"ok"`)}
}

// leased creates and queues n tasks on b and leases them for lease.
func leased(t *testing.T, b *redisbackend.Backend, n int, lease time.Duration) []*queue.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for range n {
		require.NoError(t, b.CreateAndEnqueue(ctx, newTask()))
	}
	leases, err := b.Fetch(ctx, "w", n, lease)
	require.NoError(t, err)
	require.Len(t, leases, n)
	return leases
}

// finishing waits until n AppendAndAcks of b wait for their batch.
func finishing(t *testing.T, b *redisbackend.Backend, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.WaitingFinishes() == n },
		waitLimit, time.Millisecond, "%d ends waiting", n)
}

// state returns the state of task id, as its snapshot says.
func state(t *testing.T, b *redisbackend.Backend, id string) progress.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	return snap.State
}

// TestAckDelayEndsShareAScript ends ten tasks one after the other while
// the first end lingers: their last events are recorded and their leases
// released in one round trip, one script, one XACK and two ZADDs into
// the task index, where without the delay each would have gone alone.
// Every task has succeeded and no lease is left.
func TestAckDelayEndsShareAScript(t *testing.T) {
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{AckDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	warm := leased(t, b, 1, time.Minute)[0]
	_, acked, err := b.AppendAndAck(ctx, warm, succeeded()) // loads the script, lingering 100 ms
	require.NoError(t, err)
	require.True(t, acked)

	const n = 10
	leases := leased(t, b, n, time.Minute)
	end, asked := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	before := counter.Trips()
	type result struct {
		acked bool
		err   error
	}
	results := make(chan result, n)
	for i, l := range leases {
		go func() {
			_, acked, err := b.AppendAndAck(context.Background(), l, succeeded())
			results <- result{acked, err}
		}()
		finishing(t, b, i+1)
	}
	assert.Equal(t, 100*time.Millisecond, <-asked, "the first lingers for the delay")
	assert.Empty(t, asked, "the others join it")
	end()
	for range n {
		r := <-results
		require.NoError(t, r.err)
		assert.True(t, r.acked, "the lease released")
	}
	calls := commandCalls(t, srv)
	assert.EqualValues(t, 1, counter.Trips()-before, "one round trip")
	assert.Equal(t, 1, calls["evalsha"], "one end script")
	assert.Equal(t, 1, calls["xack"], "the leases released together")
	assert.Equal(t, 2, calls["zadd"], "one ZADD into the queue's index, one into the flow's")
	assert.Equal(t, n, calls["rpush"], "each task's event recorded")
	for _, l := range leases {
		assert.Equal(t, progress.StateSuccess, state(t, b, l.Task.ID))
	}
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "no lease left")
}

// TestAckDelayAcksShareAScript acknowledges ten leases while the first
// Ack lingers: they are released in one script and one XACK.
func TestAckDelayAcksShareAScript(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{AckDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.Ack(ctx, leased(t, b, 1, time.Minute)[0])) // loads the script, lingering 100 ms

	const n = 10
	leases := leased(t, b, n, time.Minute)
	end, asked := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	errs := make(chan error, n)
	for i, l := range leases {
		go func() { errs <- b.Ack(context.Background(), l) }()
		require.Eventually(t, func() bool { _, acks, _ := b.Waiting(); return acks == i+1 },
			waitLimit, time.Millisecond, "%d acks waiting", i+1)
	}
	assert.Equal(t, 100*time.Millisecond, <-asked, "the first lingers for the delay")
	assert.Empty(t, asked, "the others join it")
	end()
	for range n {
		require.NoError(t, <-errs)
	}
	calls := commandCalls(t, srv)
	assert.Equal(t, 1, calls["evalsha"], "one ack script")
	assert.Equal(t, 1, calls["xack"], "the leases released together")
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "no lease left")
}

// TestAckDelayCancelledEndWritesNothing cancels ends while they linger:
// the first, which lingers, and one that joined it. Neither writes
// anything: their tasks have not ended and their leases are still held,
// so that once the leases pass the tasks are taken again. The end that
// stays goes without waiting for the linger to end.
func TestAckDelayCancelledEndWritesNothing(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisbackend.Config{Prefix: uniquePrefix(t), AckDelay: time.Second}
	b := newBackend(t, newClient(t, srv), cfg)
	// The two cancelled ones hold short leases, the one that stays a long
	// one.
	short := leased(t, b, 2, 500*time.Millisecond)
	stays := leased(t, b, 1, time.Minute)[0]
	lingerByHand(t) // never ends
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	errs := make([]chan error, 3)
	for i, c := range []struct {
		ctx   context.Context
		lease *queue.Lease
	}{{ctx1, short[0]}, {ctx2, short[1]}, {context.Background(), stays}} {
		errs[i] = make(chan error, 1)
		go func() {
			_, _, err := b.AppendAndAck(c.ctx, c.lease, succeeded())
			errs[i] <- err
		}()
		finishing(t, b, i+1)
	}
	cancel2()
	assert.ErrorIs(t, <-errs[1], context.Canceled)
	cancel1()
	assert.ErrorIs(t, <-errs[0], context.Canceled)
	require.NoError(t, <-errs[2], "the one left goes without the first")

	assert.Equal(t, progress.StateSuccess, state(t, b, stays.Task.ID))
	for _, l := range short {
		assert.Equal(t, progress.StatePending, state(t, b, l.Task.ID), "a cancelled end writes nothing")
	}
	assert.EqualValues(t, 2, pendingEntries(t, srv, cfg.Prefix), "a cancelled end releases nothing")

	// Nothing is lost: once their leases pass, another worker takes them.
	other := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: cfg.Prefix})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	again := map[string]int{}
	for len(again) < 2 && ctx.Err() == nil {
		leases, err := other.Fetch(ctx, "w2", 2, time.Minute)
		require.NoError(t, err)
		for _, l := range leases {
			again[l.Task.ID] = l.Task.Attempt
		}
	}
	assert.Equal(t, map[string]int{short[0].Task.ID: 2, short[1].Task.ID: 2}, again, "taken again, as a second attempt")
}

// TestCloseSendsLingeringEnds closes a backend while ends linger: they
// are recorded at once, and an end after Close does not linger.
func TestCloseSendsLingeringEnds(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{AckDelay: time.Second})
	leases := leased(t, b, 3, time.Minute)
	_, asked := lingerByHand(t) // never ends
	errs := make(chan error, 2)
	for i, l := range leases[:2] {
		go func() {
			_, _, err := b.AppendAndAck(context.Background(), l, succeeded())
			errs <- err
		}()
		finishing(t, b, i+1)
	}
	require.NoError(t, b.Close())
	for range 2 {
		require.NoError(t, <-errs)
	}
	_, acked, err := b.AppendAndAck(context.Background(), leases[2], succeeded())
	require.NoError(t, err, "no linger after Close")
	assert.True(t, acked)
	require.NoError(t, b.Ack(context.Background(), leased(t, b, 1, time.Minute)[0]), "no linger after Close")
	assert.Len(t, asked, 1, "only the first lingered")
	for _, l := range leases {
		assert.Equal(t, progress.StateSuccess, state(t, b, l.Task.ID))
	}
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "no lease left")
}

// TestAckDelayOnClusterClient checks that a Redis Cluster client, whose
// ends are never batched, takes AckDelay and ignores it: an end does not
// linger.
func TestAckDelayOnClusterClient(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, clusterMode{newClient(t, srv)}, redisbackend.Config{AckDelay: time.Second})
	_, asked := lingerByHand(t) // never ends
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	leases := leased(t, b, 2, time.Minute)
	_, acked, err := b.AppendAndAck(ctx, leases[0], succeeded())
	require.NoError(t, err)
	assert.True(t, acked)
	require.NoError(t, b.Ack(ctx, leases[1]))
	assert.Empty(t, asked, "no linger")
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "no lease left")
}
