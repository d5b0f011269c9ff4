package redisbackend_test

import (
	"context"
	"log/slog"
	"strings"
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

// idleFor waits until every entry pending in b's queue has been pending
// for longer than d, as a sweep with that lease sees them.
func idleFor(ctx context.Context, t *testing.T, c rueidis.Client, b *redisbackend.Backend, d time.Duration) {
	t.Helper()
	stream := b.Prefix() + ":{q:default}:stream"
	eventually(t, func() bool {
		all, err := c.Do(ctx, c.B().Xpending().Key(stream).Group("workers").Start("-").End("+").Count(100).Build()).ToArray()
		require.NoError(t, err)
		idle := c.B().Xpending().Key(stream).Group("workers").Idle(d.Milliseconds() + 1).Start("-").End("+").Count(100).Build()
		old, err := c.Do(ctx, idle).ToArray()
		require.NoError(t, err)
		return len(old) == len(all)
	}, "every entry pending for longer than the lease")
}

// sweepSetup starts a Redis and returns a client of it and a Backend
// on it with cfg, whose heartbeats sweep whenever the swept key is gone
// (see sweepNow).
func sweepSetup(t *testing.T, cfg redisbackend.Config) (*redistest.Server, rueidis.Client, *redisbackend.Backend) {
	t.Helper()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	b := newBackend(t, client, cfg)
	redisbackend.SetSweepEvery(b, time.Nanosecond)
	return srv, client, b
}

// sweeper is the worker whose heartbeats sweep in these tests: an entry
// pending for longer than its lease is swept.
var sweeper = queue.WorkerInfo{Name: "w", Heartbeat: time.Hour, Lease: 50 * time.Millisecond}

// sweepNow has sweeper beat with a sweep that works, once every entry
// pending in b's queue has been pending for longer than its lease: the
// swept key of b's queue is deleted first (see sweepSetup).
func sweepNow(ctx context.Context, t *testing.T, c rueidis.Client, b *redisbackend.Backend) {
	t.Helper()
	idleFor(ctx, t, c, b, sweeper.Lease)
	sweepOnce(ctx, t, c, b)
}

// sweepOnce is sweepNow with no wait.
func sweepOnce(ctx context.Context, t *testing.T, c rueidis.Client, b *redisbackend.Backend) {
	t.Helper()
	swept := b.Prefix() + ":{q:default}:workers:swept"
	require.NoError(t, c.Do(ctx, c.B().Del().Key(swept).Build()).Error())
	beat(ctx, t, b, sweeper)
}

// enqueueStray enqueues a task and delivers its entry with no token.
func enqueueStray(ctx context.Context, t *testing.T, c rueidis.Client, b *redisbackend.Backend) *queue.Task {
	t.Helper()
	stray := newTask()
	require.NoError(t, b.Enqueue(ctx, stray))
	deliverWithNoToken(ctx, t, c, b, "holder")
	return stray
}

// requireTakenOver fetches from b's queue: stray, and only it, is taken
// over, its worker lost.
func requireTakenOver(ctx context.Context, t *testing.T, b *redisbackend.Backend, stray *queue.Task) {
	t.Helper()
	got, err := b.Fetch(ctx, "other", 2, time.Minute)
	require.NoError(t, err)
	require.Len(t, got, 1, "only the stray is taken over")
	assert.Equal(t, stray.ID, got[0].Task.ID)
	assert.Equal(t, queue.EndWorkerLost, got[0].Task.PreviousEnd)
}

// TestSweepFindsStrayHiddenByStaleToken: a sweep first compares the
// group's pending count with the tokens of both leases sets, and reads on
// only when more entries are pending than there are tokens. A token whose
// entry is no longer pending (here acknowledged without its lease: it
// goes when its lease ends, or passes and a fetch takes it over) hides a
// stray from that count; once the token is gone, the next sweep marks the
// stray, and only it.
func TestSweepFindsStrayHiddenByStaleToken(t *testing.T) {
	t.Parallel()
	_, client, b := sweepSetup(t, redisbackend.Config{})
	ctx := context.Background()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	stale, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, stale, 1)
	stream := b.Prefix() + ":{q:default}:stream"
	entry, _, _ := strings.Cut(stale[0].Token, "/")
	require.NoError(t, client.Do(ctx, client.B().Xack().Key(stream).Group("workers").Id(entry).Build()).Error())
	stray := enqueueStray(ctx, t, client, b)
	sweepNow(ctx, t, client, b)
	leases := b.Prefix() + ":{q:default}:leased"
	tokens, err := client.Do(ctx, client.B().Zrange().Key(leases).Min("0").Max("-1").Build()).AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{stale[0].Token}, tokens, "as many tokens as entries pending: the sweep stops at the count")

	require.NoError(t, b.Ack(ctx, stale[0]))
	sweepNow(ctx, t, client, b)
	requireTakenOver(ctx, t, b, stray)
}

// TestSweepReadsNoLeasesWhenNoneStray: with every pending entry leased,
// however long it has been pending, a sweep counts (XPENDING's summary,
// ZCARD) and reads neither the pending list's entries nor the leases set.
func TestSweepReadsNoLeasesWhenNoneStray(t *testing.T) {
	t.Parallel()
	srv, client, b := sweepSetup(t, redisbackend.Config{})
	ctx := context.Background()
	for range 3 {
		require.NoError(t, b.Enqueue(ctx, newTask()))
	}
	held, err := b.Fetch(ctx, "w", 3, time.Minute)
	require.NoError(t, err)
	require.Len(t, held, 3)
	idleFor(ctx, t, client, b, sweeper.Lease)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	sweepOnce(ctx, t, client, b)

	info, err := srv.Do("INFO", "commandstats").ToString()
	require.NoError(t, err)
	assert.Contains(t, info, "cmdstat_xpending:calls=1,", "one XPENDING, its summary")
	assert.NotContains(t, info, "cmdstat_zrange:", "no read of the leases set")
	for _, l := range held {
		require.NoError(t, b.Extend(ctx, l, time.Minute), "the lease is still held")
	}
}

// TestSweepOnWrongTypeLeavesHeartbeat: a sweep that fails (here the
// leases set is a key of another type, which every fetch would refuse
// too) does not fail the heartbeat that carries it: the worker's
// heartbeat is recorded and returns no error, and the failure is logged.
func TestSweepOnWrongTypeLeavesHeartbeat(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	_, client, b := sweepSetup(t, redisbackend.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx := context.Background()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	deliverWithNoToken(ctx, t, client, b, "holder")
	leases := b.Prefix() + ":{q:default}:leased"
	require.NoError(t, client.Do(ctx, client.B().Set().Key(leases).Value("x").Build()).Error())
	sweepNow(ctx, t, client, b)

	workers, err := b.Workers(ctx)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.Equal(t, "w", workers[0].Name)
	assert.Contains(t, logs.String(), "WRONGTYPE", "the sweep's failure is logged")
}

// TestSweepTakesNoOldLayoutLease: a lease taken by a worker of the
// version before 2026-12-07 (its entry in that layout's leases set) is
// counted with the tokens and never marked, however long it has been
// pending; a stray beside it is.
func TestSweepTakesNoOldLayoutLease(t *testing.T) {
	t.Parallel()
	srv, client, b := sweepSetup(t, redisbackend.Config{})
	old := legacy{t: t, srv: srv, prefix: b.Prefix()}
	ctx := context.Background()
	require.NoError(t, b.Enqueue(ctx, newTask()))
	entry, token := old.fetch("old", time.Minute)
	require.NotEmpty(t, entry)
	stray := enqueueStray(ctx, t, client, b)
	sweepNow(ctx, t, client, b)
	requireTakenOver(ctx, t, b, stray)
	assert.True(t, old.extend(entry, token), "the old worker's lease is still held")
	assert.True(t, old.ack(entry, token))
}
