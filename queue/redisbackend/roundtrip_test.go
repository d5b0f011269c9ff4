package redisbackend_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
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

// heartbeats returns how many of trips (see redistrips.Client.Recorded)
// carry a worker's heartbeat (see redisbackend.HeartbeatSHA): they come
// once a second whatever the rate of tasks, so a count per task leaves
// them out.
func heartbeats(trips [][]string) int {
	n := 0
	for _, trip := range trips {
		if slices.ContainsFunc(trip, func(cmd string) bool { return strings.HasPrefix(cmd, "EVALSHA "+redisbackend.HeartbeatSHA+" ") }) {
			n++
		}
	}
	return n
}

// commandCalls returns the calls of each command since the last CONFIG
// RESETSTAT, from INFO commandstats (commands run by scripts included).
func commandCalls(t testing.TB, srv *redistest.Server) map[string]int {
	t.Helper()
	calls := map[string]int{}
	for name, n := range commandStats(t, srv, "calls") {
		calls[name] = int(n)
	}
	return calls
}

// commandStats returns field ("calls", "usec", "usec_per_call"...) of
// each command's statistics since the last CONFIG RESETSTAT, from INFO
// commandstats (commands run by scripts included).
func commandStats(t testing.TB, srv *redistest.Server, field string) map[string]float64 {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats").ToString()
	require.NoError(t, err)
	stats := map[string]float64{}
	for _, line := range strings.Split(info, "\n") {
		name, values, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(values, ",") {
			if v, ok := strings.CutPrefix(kv, field+"="); ok {
				n, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				stats[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return stats
}

// commandsOf runs op on srv's statistics reset and returns the commands it
// made Redis run, in all and by name, leaving out the reset itself, the
// client's PINGs and the commands named in ignore.
func commandsOf(t testing.TB, srv *redistest.Server, op func(), ignore ...string) (int, map[string]int) {
	t.Helper()
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	op()
	calls := commandCalls(t, srv)
	delete(calls, "config|resetstat")
	// The client's own PINGs (rueidis checks a connection that has been
	// quiet for a while) are not the operation's: a loaded machine made
	// one land in a count now and then.
	delete(calls, "ping")
	for _, name := range ignore {
		delete(calls, name)
	}
	n := 0
	for _, c := range calls {
		n += c
	}
	return n, calls
}

// progressOnly hides every method of a Backend but those of a progress
// store, so that a Broker cannot tell that it is also the queue.
type progressOnly struct{ progress.Backend }

func TestRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{})
	ctx := context.Background()

	// Warm up: load every script once, so that no NOSCRIPT retry is
	// counted below.
	warm := runTask(ctx, t, b)
	_, _, err := b.Snapshot(ctx, warm.ID)
	require.NoError(t, err)

	flows := flowsNamed("f")
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flows})
	limited := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flows, CallerLimits: queue.DefaultCallerLimits()})
	// Warm up the caller limits' script.
	_, err = limited.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "warm", IdempotencyKey: "warm"})
	require.NoError(t, err)
	require.NoError(t, b.CreateAndEnqueue(ctx, newTask()))
	// Warm up the dead-letter scripts too.
	held := leaseOne(t, b)
	require.NoError(t, b.Extend(ctx, held, time.Minute))
	require.NoError(t, b.Retry(ctx, held, time.Now(), queue.EndFailed))
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	held = leases[0]
	require.NoError(t, b.Bury(ctx, held, "warm-up"))
	_, err = b.Dead(ctx, 0)
	require.NoError(t, err)
	_, err = broker.Requeue(ctx, held.Task.ID)
	require.NoError(t, err)
	drain, err := b.Fetch(ctx, "w", 10, time.Minute)
	require.NoError(t, err)
	for _, l := range drain {
		require.NoError(t, b.Ack(ctx, l))
	}

	task := newTask()
	var lease *queue.Lease
	events := []progress.Event{
		progress.LogEvent("one"),
		{Type: progress.EventProgress, Progress: 50, Status: "half"},
		{Type: progress.EventToken, Token: "tok"},
	}
	tests := []struct {
		name  string
		op    func() error
		trips int64
	}{
		{"Create", func() error { return b.Create(ctx, task.ID) }, 1},
		{"Enqueue", func() error { return b.Enqueue(ctx, task) }, 1},
		{"Append one event", func() error { _, err := b.Append(ctx, task.ID, events[0]); return err }, 1},
		{"Append three events", func() error { _, err := b.Append(ctx, task.ID, events...); return err }, 1},
		{"Snapshot", func() error { _, _, err := b.Snapshot(ctx, task.ID); return err }, 1},
		{"Events", func() error { _, err := b.Events(ctx, task.ID, ""); return err }, 1},
		{"Get", func() error { _, err := b.Get(ctx, task.ID); return err }, 1},
		{"Fetch with a task ready", func() error {
			leases, err := b.Fetch(ctx, "w", 1, time.Minute)
			if err == nil {
				lease = leases[0]
			}
			return err
		}, 1},
		{"Extend", func() error { return b.Extend(ctx, lease, time.Minute) }, 1},
		{"Bury", func() error { return b.Bury(ctx, lease, "boom") }, 1},
		{"Dead", func() error { _, err := b.Dead(ctx, 0); return err }, 1},
		{"Requeue", func() error { return b.Requeue(ctx, task.ID, newTask()) }, 2},
		{"CreateAndEnqueue", func() error { return b.CreateAndEnqueue(ctx, newTask()) }, 1},
		{"Broker.Enqueue", func() error {
			_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
			return err
		}, 1},
		{"Broker.Enqueue with an idempotency key: the create script", func() error {
			_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "round trips"})
			return err
		}, 1},
		{"Broker.Enqueue with the key again: the script refuses, then Get", func() error {
			_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "round trips"})
			return err
		}, 2},
		{"Broker.Enqueue with caller limits: checked in the same script", func() error {
			_, err := limited.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "alice"})
			return err
		}, 1},
		{"Broker.Enqueue with caller limits and an idempotency key: admit, then the create script", func() error {
			_, err := limited.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "alice", IdempotencyKey: "limited"})
			return err
		}, 2},
		{"Broker.Enqueue with the backend passed as the store", func() error {
			_, err := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flows}).Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
			return err
		}, 1},
		{"Broker.Enqueue with a separate store", func() error {
			split := queue.NewBroker(b, progressOnly{b}, queue.BrokerConfig{Registry: flows, Logger: quiet})
			_, err := split.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
			return err
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter.Trips()
			require.NoError(t, tt.op())
			assert.Equal(t, tt.trips, counter.Trips()-before, "round trips")
		})
	}

	t.Run("Append is one script call", func(t *testing.T) {
		require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
		const appends = 10
		for range appends {
			_, err := b.Append(ctx, task.ID, events...)
			require.NoError(t, err)
		}
		calls := commandCalls(t, srv)
		assert.Equal(t, appends, calls["evalsha"], "one EVALSHA per Append")
		assert.Zero(t, calls["eval"], "no script sent again")
		require.Greater(t, len(events), 1)
		const steps = 1 // the log line
		assert.Zero(t, calls["xadd"])
		assert.Equal(t, appends*(1+steps), calls["rpush"], "the events of one Append added as one list element (and the steps as another)")
		assert.Zero(t, calls["pexpireat"], "no expiry moved: the keys exist, and the retention is far")
		assert.Equal(t, appends, calls["spublish"], "the events of one Append published in one message")
	})
	t.Run("Enqueue is one script call", func(t *testing.T) {
		// The record, its expiry, two index entries and the stream
		// entry, in one script (6 commands, as the pipeline they were
		// sent in before); a hash that has a snapshot (the store's
		// Create wrote it) has its expiry moved by a second PEXPIRE (7,
		// one more). The index's upkeep (naming the flow, pruning),
		// done once in a while, is left out.
		for _, tt := range []struct {
			name   string
			create bool
			want   int
		}{{"a new hash", false, 6}, {"after Create", true, 7}} {
			task := newTask()
			if tt.create {
				require.NoError(t, b.Create(ctx, task.ID))
			}
			n, calls := commandsOf(t, srv, func() { require.NoError(t, b.Enqueue(ctx, task)) }, "sadd", "zremrangebyscore")
			assert.Equal(t, 1, calls["evalsha"], "%s: one script", tt.name)
			assert.Zero(t, calls["eval"], "%s: no script sent again", tt.name)
			assert.Equal(t, tt.want, n, "%s: commands: %v", tt.name, calls)
		}
	})
	t.Run("a create checks the ids it is given only", func(t *testing.T) {
		// The record, its expiry, two index entries and the stream
		// entry, in one script (6 commands). An id that comes from the
		// caller (Backend.CreateAndEnqueue's, an idempotency key's) may
		// be taken, and is checked first: an EXISTS more (7). The ids a
		// Broker draws itself (queue.NewID, 128 random bits) cannot be,
		// and are not, also when the script checks caller limits (the
		// server's clock, the caller's pending set and rate: 7 more).
		// The index's upkeep (naming the flow, pruning), done once in a
		// while, is left out.
		for _, tt := range []struct {
			name   string
			op     func() error
			want   int
			exists int
		}{
			{"Broker.Enqueue", func() error {
				_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
				return err
			}, 6, 0},
			{"Broker.Enqueue with caller limits", func() error {
				_, err := limited.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "checks"})
				return err
			}, 13, 0},
			{"Broker.Enqueue with an idempotency key", func() error {
				_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "checked"})
				return err
			}, 7, 1},
			{"Backend.CreateAndEnqueue", func() error { return b.CreateAndEnqueue(ctx, newTask()) }, 7, 1},
		} {
			n, calls := commandsOf(t, srv, func() { require.NoError(t, tt.op()) }, "sadd", "zremrangebyscore")
			assert.Equal(t, 1, calls["evalsha"], "%s: one script", tt.name)
			assert.Equal(t, tt.exists, calls["exists"], "%s: EXISTS", tt.name)
			assert.Equal(t, tt.want, n, "%s: commands: %v", tt.name, calls)
		}
	})
	t.Run("lease scripts", func(t *testing.T) {
		trips := func(op func() error) int64 {
			t.Helper()
			before := counter.Trips()
			require.NoError(t, op())
			return counter.Trips() - before
		}
		require.NoError(t, b.Enqueue(ctx, newTask()))
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		l := leases[0]
		assert.Equal(t, int64(1), trips(func() error { return b.Retry(ctx, l, time.Now(), queue.EndFailed) }), "Retry at once")
		leases, err = b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		l = leases[0]
		// An hour, not a moment: on a loaded machine a retry due a
		// millisecond later can be due by the time the script runs, and
		// take the path of Retry at once.
		assert.Equal(t, int64(2), trips(func() error { return b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndFailed) }),
			"Retry later: the cancelled flag is read after the script")
		require.NoError(t, b.Enqueue(ctx, newTask()))
		leases, err = b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		l = leases[0]

		// Redis forgets its scripts (a restart): the script is loaded
		// again at the cost of one round trip.
		require.NoError(t, srv.Do("SCRIPT", "FLUSH").Error())
		assert.Equal(t, int64(2), trips(func() error { return b.Extend(ctx, l, time.Minute) }), "Extend after SCRIPT FLUSH")
		assert.Equal(t, int64(1), trips(func() error { return b.Extend(ctx, l, time.Minute) }), "Extend once loaded again")
		require.NoError(t, srv.Do("PEXPIRE", b.Prefix()+":{"+l.Task.ID+"}:task", "60000").Error())
		require.NoError(t, b.Ack(ctx, l))
		ttl, err := srv.Do("PTTL", b.Prefix()+":{"+l.Task.ID+"}:task").AsInt64()
		require.NoError(t, err)
		assert.Greater(t, ttl, int64(60000), "Ack refreshes the record's expiry")
	})
}

// TestRetryRecordsTheEndOfAHeldLeaseOnly checks what Retry writes to the
// task hash, and in how many round trips: on a single Redis the retry
// script writes why the attempt ended, and counts a hand-back, only after
// checking the lease's holder (one round trip, as before the check); on a
// Cluster client, where the task hash is on another slot, a script on the
// task hash writes them first (a round trip of its own, as the commands
// that wrote them did), and a lease lost before a fetch took the task
// over has its hand-back taken back (one more).
func TestRetryRecordsTheEndOfAHeldLeaseOnly(t *testing.T) {
	t.Parallel()
	inBothModesCounted(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, cluster bool, trips tripCounter) {
		ctx := context.Background()
		runTask(ctx, t, b) // loads the scripts
		warm := leaseOne(t, b)
		require.NoError(t, b.Retry(ctx, warm, time.Now().Add(time.Hour), queue.EndShutdown))
		perRetry := map[bool]int64{false: 1, true: 2}[cluster]
		read := func(id string) (string, string) {
			t.Helper()
			v, err := srv.Do("HMGET", b.Prefix()+":{"+id+"}:task", "prev", "handbacks").ToArray()
			require.NoError(t, err)
			prev, _ := v[0].ToString()
			handBacks, _ := v[1].ToString()
			return prev, handBacks
		}

		l := leaseOne(t, b)
		n, err := trips(func() error { return b.Retry(ctx, l, time.Now(), queue.EndStoreDown) })
		require.NoError(t, err)
		assert.Equal(t, perRetry, n, "a held lease's hand-back")
		prev, handBacks := read(l.Task.ID)
		assert.Equal(t, string(queue.EndStoreDown), prev)
		assert.Equal(t, "1", handBacks)

		// The lease given back already: its second Retry writes nothing.
		n, err = trips(func() error { return b.Retry(ctx, l, time.Now(), queue.EndFailed) })
		require.ErrorIs(t, err, queue.ErrLeaseLost)
		assert.Equal(t, perRetry, n, "a stale lease's Retry")
		prev, handBacks = read(l.Task.ID)
		assert.Equal(t, string(queue.EndStoreDown), prev)
		assert.Equal(t, "1", handBacks)

		// A worker found dead (its lease marked lost, see
		// lib/reclaim.lua) gives its task back before a fetch has
		// taken it over.
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		l = leases[0]
		markLost(t, srv, b, l, "0")
		n, err = trips(func() error { return b.Retry(ctx, l, time.Now(), queue.EndShutdown) })
		require.ErrorIs(t, err, queue.ErrLeaseLost)
		if cluster {
			assert.Equal(t, int64(3), n, "the hand-back counted ahead of the script is taken back")
		} else {
			assert.Equal(t, int64(1), n)
		}
		_, handBacks = read(l.Task.ID)
		assert.Equal(t, "1", handBacks, "a lost lease's hand-back")
		taken, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, taken, 1)
		assert.Equal(t, queue.EndWorkerLost, taken[0].Task.PreviousEnd, "the fetch that takes the task over tells why")
		assert.Equal(t, 1, taken[0].Task.HandBacks)
	})
}
