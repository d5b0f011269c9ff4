package redisbackend_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// An entry pending for a worker's consumer with no token in the leases
// set was delivered by a fetch script that then failed (a command of it
// refused, which aborts the script without undoing what it wrote): its
// worker never got it. The tests deliver one with XREADGROUP directly.

// deliverWithNoToken reads the next entry of b's queue for consumer (the
// consumer group created if missing), as a fetch script that failed
// after its XREADGROUP leaves it.
func deliverWithNoToken(ctx context.Context, t *testing.T, c rueidis.Client, b *redisbackend.Backend, consumer string) {
	t.Helper()
	stream := b.Prefix() + ":{q:default}:stream"
	if err := c.Do(ctx, c.B().XgroupCreate().Key(stream).Group("workers").Id("0").Mkstream().Build()).Error(); err != nil {
		require.ErrorContains(t, err, "BUSYGROUP")
	}
	read, err := c.Do(ctx, c.B().Xreadgroup().Group("workers", consumer).Count(1).Streams().Key(stream).Id(">").Build()).AsXRead()
	require.NoError(t, err)
	require.Len(t, read[stream], 1, "the entry is delivered")
}

// TestPendingEntryWithNoToken: such an entry is taken back whatever the
// state of the worker it was delivered to, and the next fetch takes it
// over ("worker lost"). A worker found dead has it marked lost with its
// leases; while it lives, and once it has retired, the sweep of a
// heartbeat (once per sweepEvery and queue) marks it once it has been
// pending for longer than the beating worker's lease. On a single Redis
// and a Cluster: the sweep's keys are the heartbeat's.
func TestPendingEntryWithNoToken(t *testing.T) {
	t.Parallel()
	onSingleAndCluster(t, func(t *testing.T, _ bool, connect func() rueidis.Client) {
		client := connect()
		for _, tc := range []struct {
			name string
			// before is what the worker holding the entry does before the
			// others beat; during what it does at each of their beats.
			before, during func(ctx context.Context, t *testing.T, b *redisbackend.Backend, holder queue.WorkerInfo)
			// lease is that of the worker whose heartbeats take the entry
			// back: a minute leaves the dead worker's to the reclaim.
			lease time.Duration
		}{
			{
				name:   "dead worker",
				before: beat,
				during: func(context.Context, *testing.T, *redisbackend.Backend, queue.WorkerInfo) {},
				lease:  time.Minute,
			},
			{
				name:   "live worker",
				before: beat,
				during: beat,
				lease:  100 * time.Millisecond,
			},
			{
				name: "retired worker",
				before: func(ctx context.Context, t *testing.T, b *redisbackend.Backend, holder queue.WorkerInfo) {
					beat(ctx, t, b, holder)
					require.NoError(t, b.Retire(ctx, holder.Name))
				},
				during: func(context.Context, *testing.T, *redisbackend.Backend, queue.WorkerInfo) {},
				lease:  100 * time.Millisecond,
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := newBackend(t, client, redisbackend.Config{})
				redisbackend.SetSweepEvery(b, time.Millisecond)
				ctx := context.Background()
				task := newTask()
				require.NoError(t, b.Enqueue(ctx, task))
				// The holder's lease is long: its own sweeps leave the entry.
				holder := queue.WorkerInfo{Name: "holder", Heartbeat: 50 * time.Millisecond, Lease: time.Minute}
				other := queue.WorkerInfo{Name: "other", Heartbeat: 50 * time.Millisecond, Lease: tc.lease}
				deliverWithNoToken(ctx, t, client, b, holder.Name)
				tc.before(ctx, t, b, holder)

				leases := b.Prefix() + ":{q:default}:leased"
				eventually(t, func() bool {
					tc.during(ctx, t, b, holder)
					beat(ctx, t, b, other)
					n, err := client.Do(ctx, client.B().Zcard().Key(leases).Build()).AsInt64()
					require.NoError(t, err)
					return n == 1
				}, "the entry is marked")
				fctx, cancel := context.WithTimeout(ctx, waitLimit)
				defer cancel()
				got, err := b.Fetch(fctx, other.Name, 1, time.Minute)
				require.NoError(t, err)
				require.Len(t, got, 1, "the next fetch takes it over")
				assert.Equal(t, task.ID, got[0].Task.ID)
				assert.Equal(t, queue.EndWorkerLost, got[0].Task.PreviousEnd)
				require.NoError(t, b.Ack(ctx, got[0]))
			})
		}
	})
}

// beat writes a heartbeat of w.
func beat(ctx context.Context, t *testing.T, b *redisbackend.Backend, w queue.WorkerInfo) {
	t.Helper()
	require.NoError(t, b.Heartbeat(ctx, w))
}

// TestSweepTakesNoHeldLease: the sweep of the heartbeats takes back no
// entry that has a token in the leases set, however long it has been
// pending: neither a lease that has not passed (a minute) nor one whose
// deadline is extended as it would pass. Both stay pending past several
// of the beating worker's leases, through sweeps, and are still held.
func TestSweepTakesNoHeldLease(t *testing.T) {
	t.Parallel()
	onSingleAndCluster(t, func(t *testing.T, _ bool, connect func() rueidis.Client) {
		client := connect()
		b := newBackend(t, client, redisbackend.Config{})
		redisbackend.SetSweepEvery(b, time.Millisecond)
		ctx := context.Background()
		for range 2 {
			require.NoError(t, b.Enqueue(ctx, newTask()))
		}
		long, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, long, 1)
		const lease = 100 * time.Millisecond
		extended, err := b.Fetch(ctx, "w", 1, 2*lease)
		require.NoError(t, err)
		require.Len(t, extended, 1)
		w := queue.WorkerInfo{Name: "w", Heartbeat: 50 * time.Millisecond, Lease: lease}

		stream := b.Prefix() + ":{q:default}:stream"
		eventually(t, func() bool {
			require.NoError(t, b.Extend(ctx, extended[0], 2*lease))
			beat(ctx, t, b, w)
			idle := client.B().Xpending().Key(stream).Group("workers").Idle(3 * lease.Milliseconds()).Start("-").End("+").Count(10).Build()
			pending, err := client.Do(ctx, idle).ToArray()
			require.NoError(t, err)
			return len(pending) == 2
		}, "both entries pending for three leases")
		beat(ctx, t, b, w) // a sweep with both past the bound

		leases := b.Prefix() + ":{q:default}:leased"
		tokens, err := client.Do(ctx, client.B().Zrange().Key(leases).Min("0").Max("-1").Build()).AsStrSlice()
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{long[0].Token, extended[0].Token}, tokens, "the leases set holds the two leases, unmarked")
		for _, l := range []*queue.Lease{long[0], extended[0]} {
			require.NoError(t, b.Extend(ctx, l, time.Minute), "the lease is still held")
			require.NoError(t, b.Ack(ctx, l))
		}
	})
}

// TestSweepFindsStrayBehindManyLeases: the sweep reads the whole pending
// list, a page of ReclaimLimit entries at a time: an entry with no token
// behind more leased entries than a page, all pending for longer than a
// lease, is marked, and only it.
func TestSweepFindsStrayBehindManyLeases(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	b := newBackend(t, client, redisbackend.Config{})
	redisbackend.SetSweepEvery(b, time.Millisecond)
	ctx := context.Background()
	n := redisbackend.ReclaimLimit + 1
	for range n {
		require.NoError(t, b.Enqueue(ctx, newTask()))
	}
	var held []*queue.Lease
	for len(held) < n {
		got, err := b.Fetch(ctx, "w", n-len(held), time.Minute)
		require.NoError(t, err)
		held = append(held, got...)
	}
	stray := newTask()
	require.NoError(t, b.Enqueue(ctx, stray))
	deliverWithNoToken(ctx, t, client, b, "holder")

	w := queue.WorkerInfo{Name: "w", Heartbeat: 50 * time.Millisecond, Lease: 100 * time.Millisecond}
	leases := b.Prefix() + ":{q:default}:leased"
	eventually(t, func() bool {
		beat(ctx, t, b, w)
		m, err := client.Do(ctx, client.B().Zcard().Key(leases).Build()).AsInt64()
		require.NoError(t, err)
		return m == int64(n+1)
	}, "the entry with no token is marked")
	got, err := b.Fetch(ctx, "other", 2, time.Minute)
	require.NoError(t, err)
	require.Len(t, got, 1, "only the stray is taken over")
	assert.Equal(t, stray.ID, got[0].Task.ID)
	assert.Equal(t, queue.EndWorkerLost, got[0].Task.PreviousEnd)
}
