package redisbackend_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// Two Backends on one prefix, each with its own client, play two
// processes sharing a Redis.

func TestDeadWorkersTaskIsTakenOver(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	a := newBackend(t, newClient(t, srv), cfg)
	b := newBackend(t, newClient(t, srv), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	task := newTask()
	require.NoError(t, a.Create(ctx, task.ID))
	require.NoError(t, a.Enqueue(ctx, task))
	first, err := a.Fetch(ctx, "process-a", 1, 200*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, first, 1)
	assert.Equal(t, 1, first[0].Task.Attempt)

	// Process a dies: nobody extends its lease. Process b, with a long
	// lease of its own, takes the task over once a's lease has passed.
	second, err := b.Fetch(ctx, "process-b", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, second, 1)
	assert.Equal(t, task.ID, second[0].Task.ID)
	assert.Equal(t, 2, second[0].Task.Attempt, "the flow sees the second attempt")

	assert.ErrorIs(t, a.Ack(ctx, first[0]), queue.ErrLeaseLost, "the dead worker's lease")
	assert.ErrorIs(t, a.Extend(ctx, first[0], time.Minute), queue.ErrLeaseLost)
	require.NoError(t, b.Extend(ctx, second[0], time.Minute))
	require.NoError(t, b.Ack(ctx, second[0]))
	assert.Zero(t, pendingEntries(t, srv, cfg.Prefix), "acknowledged entries leave the pending list")
}

func TestAcknowledgedEntriesAreTrimmed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	const tasks = 1000
	for range tasks {
		require.NoError(t, b.Enqueue(ctx, newTask()))
	}
	xlen := func() int64 {
		t.Helper()
		n, err := srv.Do("XLEN", b.Prefix()+":{q:default}:stream").AsInt64()
		require.NoError(t, err)
		return n
	}
	require.Equal(t, int64(tasks), xlen())
	// All held, then acknowledged newest first: the oldest is pending
	// until the last Ack, which leaves nothing pending.
	var all []*queue.Lease
	for len(all) < tasks {
		leases, err := b.Fetch(ctx, "w", 64, time.Minute)
		require.NoError(t, err)
		all = append(all, leases...)
	}
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	for i := len(all) - 1; i > 0; i-- {
		require.NoError(t, b.Ack(ctx, all[i]))
	}
	assert.Equal(t, int64(tasks), xlen(), "nothing trimmed while the oldest entry is pending")
	// A release trims only when one of its entries is picked, one in a
	// hundred by a hash of its id: about ten of these 999 (a bound of 40
	// fails once in more than a billion runs); each looks for the oldest
	// entry in use with an XPENDING.
	assert.LessOrEqual(t, commandCalls(t, srv)["xpending"], 40, "an acknowledgement does not trim each time")
	require.NoError(t, b.Ack(ctx, all[0]))
	// With nothing pending, a release that trims removes whole blocks
	// (stream-node-max-entries, 100 by default): at most one block of
	// acknowledged entries is left. A trim comes within 3000 releases but
	// once in 10^13 runs.
	for i := 0; i < 3000 && xlen() > 100; i++ {
		require.NoError(t, b.Enqueue(ctx, newTask()))
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.NoError(t, b.Ack(ctx, leases[0]))
	}
	assert.LessOrEqual(t, xlen(), int64(100), "acknowledged entries are trimmed")

	// Entries still held are kept, whatever their age.
	held := newTask()
	require.NoError(t, b.Enqueue(ctx, held))
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	for range 300 {
		require.NoError(t, b.Enqueue(ctx, newTask()))
	}
	for done := 0; done < 300; {
		more, err := b.Fetch(ctx, "w", 64, time.Minute)
		require.NoError(t, err)
		for _, l := range more {
			require.NoError(t, b.Ack(ctx, l))
		}
		done += len(more)
	}
	assert.Greater(t, xlen(), int64(300), "nothing after the held entry is trimmed")
	require.NoError(t, b.Ack(ctx, leases[0]), "the held lease is intact")
}

// A Fetch asking for more tasks than one script should lease gets a
// bounded batch; the rest stay ready for the next Fetch.
func TestFetchLeasesABoundedBatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	tasks := 2*redisbackend.MaxFetch + 10
	for range tasks {
		require.NoError(t, b.Enqueue(ctx, newTask()))
	}
	seen := map[string]bool{}
	for _, want := range []int{redisbackend.MaxFetch, redisbackend.MaxFetch, 10} {
		leases, err := b.Fetch(ctx, "w", 10*tasks, time.Minute)
		require.NoError(t, err)
		require.Equal(t, want, len(leases), "tasks leased by one Fetch")
		for _, l := range leases {
			assert.False(t, seen[l.Task.ID], "task %s leased twice", l.Task.ID)
			seen[l.Task.ID] = true
		}
	}
	assert.Len(t, seen, tasks, "every task leased once")
}

func TestCancellationsReachOtherProcesses(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	web := newBackend(t, newClient(t, srv), cfg)
	worker := newBackend(t, newClient(t, srv), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	cancels, err := worker.Cancellations(ctx)
	require.NoError(t, err)
	task := newTask()
	require.NoError(t, web.Enqueue(ctx, task))
	require.NoError(t, web.Cancel(ctx, task.ID))
	select {
	case id := <-cancels:
		assert.Equal(t, task.ID, id)
	case <-ctx.Done():
		require.FailNow(t, "cancellation not delivered")
	}

	other, err := redisbackend.New(newClient(t, srv), redisbackend.Config{Prefix: cfg.Prefix, Queue: "other"})
	require.NoError(t, err)
	defer other.Close()
	otherTask := newTask()
	otherTask.ID = task.ID + "x"
	require.NoError(t, other.Enqueue(ctx, otherTask))
	require.NoError(t, other.Cancel(ctx, otherTask.ID))
	require.NoError(t, web.Cancel(ctx, task.ID))
	select {
	case id := <-cancels:
		assert.Equal(t, task.ID, id, "cancellations of another queue are not delivered")
	case <-ctx.Done():
		require.FailNow(t, "second cancellation not delivered")
	}
}

func TestOrphanEntryIsDropped(t *testing.T) {
	t.Parallel()
	// A single Redis's Fetch reads the records in its script; a Cluster
	// client's in a second round trip.
	inBothModes(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend) {
		ctx := context.Background()
		lost, kept := newTask(), newTask()
		require.NoError(t, b.Enqueue(ctx, lost))
		// An entry that names no valid task id, as only a foreign
		// writer could add.
		stream := b.Prefix() + ":{q:default}:stream"
		require.NoError(t, srv.Do("XADD", stream, "*", "task", "bad}id").Error())
		// A task with a progress snapshot and no record (as one
		// recorded by an earlier version of the layout looks).
		snapOnly := newTask()
		require.NoError(t, b.Create(ctx, snapOnly.ID))
		require.NoError(t, srv.Do("XADD", stream, "*", "task", snapOnly.ID).Error())
		require.NoError(t, b.Enqueue(ctx, kept))
		// The record expired while the task waited.
		require.NoError(t, srv.Do("DEL", b.Prefix()+":{"+lost.ID+"}:task").Error())

		fctx, cancel := context.WithTimeout(ctx, waitLimit)
		defer cancel()
		leases, err := b.Fetch(fctx, "w", 4, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		assert.Equal(t, kept.ID, leases[0].Task.ID)
		assert.Equal(t, 1, leases[0].Task.Attempt)

		keys, err := srv.Do("KEYS", b.Prefix()+":{[^q]*").AsStrSlice()
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{b.Prefix() + ":{" + kept.ID + "}:task", b.Prefix() + ":{" + snapOnly.ID + "}:task"}, keys,
			"no record is left behind by the attempt count, and a snapshot is kept")
		snap, _, err := b.Snapshot(ctx, snapOnly.ID)
		require.NoError(t, err)
		assert.Equal(t, progress.StatePending, snap.State)
		pending, err := srv.Do("XPENDING", stream, "workers").ToArray()
		require.NoError(t, err)
		n, err := pending[0].AsInt64()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "only the leased task's entry is pending")
		_, err = b.Get(ctx, lost.ID)
		assert.ErrorIs(t, err, queue.ErrNotFound)
	})
}

// betweenClient is a client of a single Redis that looks like a Redis
// Cluster client (see clusterMode) and calls between once, after the
// round trip that increments the attempt of task hash key as it leases
// the task (see Backend.lease).
type betweenClient struct {
	clusterMode
	key     string
	between func()
	once    sync.Once
}

func (c *betweenClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	res := c.clusterMode.DoMulti(ctx, cmds...)
	for _, cmd := range cmds {
		if args := cmd.Commands(); len(args) > 2 && args[0] == "HINCRBY" && args[1] == c.key {
			c.once.Do(c.between)
		}
	}
	return res
}

// TestOrphanRecordWrittenMeanwhileIsKept: a Cluster client's Fetch that
// finds a queue entry without a task record deletes what its attempt
// count left of the record, unless the task's hash got a progress
// snapshot or a record after the lease read it: the decision is made on
// Redis, in one step with the delete.
func TestOrphanRecordWrittenMeanwhileIsKept(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		written []string // HSET field value, between the read and the delete
		kept    bool
	}{
		{"nothing written", nil, false},
		{"snapshot written", []string{"state", string(progress.StatePending)}, true},
		{"record written", []string{"rec", "written meanwhile"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			prefix := uniquePrefix(t)
			orphan, kept := newTask(), newTask()
			key := prefix + ":{" + orphan.ID + "}:task"
			client := &betweenClient{clusterMode: clusterMode{newClient(t, srv)}, key: key, between: func() {
				if tc.written != nil {
					require.NoError(t, srv.Do(append([]string{"HSET", key}, tc.written...)...).Error())
				}
			}}
			b := newBackend(t, client, redisbackend.Config{Prefix: prefix})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			require.NoError(t, b.Enqueue(ctx, orphan))
			require.NoError(t, b.Enqueue(ctx, kept))
			// The record expired while the task waited.
			require.NoError(t, srv.Do("DEL", key).Error())

			leases, err := b.Fetch(ctx, "w", 4, time.Minute)
			require.NoError(t, err)
			require.Len(t, leases, 1)
			assert.Equal(t, kept.ID, leases[0].Task.ID)
			fields, err := srv.Do("HGETALL", key).AsStrMap()
			require.NoError(t, err)
			if !tc.kept {
				assert.Empty(t, fields, "what the attempt count left is deleted")
				return
			}
			assert.Equal(t, tc.written[1], fields[tc.written[0]], "the hash written meanwhile is kept: %v", fields)
		})
	}
}

func TestSlowSubscriberPastTheBuffer(t *testing.T) {
	defer redisbackend.SetInboxLimit(10)()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	ch, err := b.Subscribe(ctx, task.ID, "")
	require.NoError(t, err)
	_, err = b.Append(ctx, task.ID, progress.LogEvent("first"))
	require.NoError(t, err)
	collectN(t, ch, 1) // the subscription is live

	// Nobody reads while far more than the buffer holds is appended.
	const n = 300
	for range n {
		_, err := b.Append(ctx, task.ID, progress.Event{Type: progress.EventToken, Token: "t"})
		require.NoError(t, err)
	}
	_, err = b.Append(ctx, task.ID, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "stopped"})
	require.NoError(t, err)

	events, err := b.Events(ctx, task.ID, "")
	require.NoError(t, err)
	require.Len(t, events, n+2)
	assert.Equal(t, ids(events[1:]), ids(collect(t, ch)), "every event once, in order, read from the stream")
}

func TestCancellationsSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cancels, err := b.Cancellations(ctx)
	require.NoError(t, err)

	srv.Restart()
	eventually(t, func() bool { return len(subscribedClients(t, srv)) == 1 }, "pub/sub connection restored")
	task := newTask()
	eventually(t, func() bool { return b.Enqueue(ctx, task) == nil }, "Redis is back")
	require.NoError(t, b.Cancel(ctx, task.ID))
	select {
	case id, ok := <-cancels:
		require.True(t, ok, "the listener survived the restart")
		assert.Equal(t, task.ID, id)
	case <-ctx.Done():
		require.FailNow(t, "cancellation not delivered after the restart")
	}
}

func TestStreamDeletedUnderALease(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	held := newTask()
	require.NoError(t, b.Enqueue(ctx, held))
	leases, err := b.Fetch(ctx, "w", 1, 50*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, leases, 1)

	// Someone deletes the stream (and its consumer group) while the lease
	// runs out.
	require.NoError(t, srv.Do("DEL", b.Prefix()+":{q:default}:stream").Error())
	time.Sleep(100 * time.Millisecond)
	next := newTask()
	require.NoError(t, b.Enqueue(ctx, next))
	got, err := b.Fetch(ctx, "w", 2, time.Minute)
	require.NoError(t, err, "Fetch forgets the lost lease and recreates the group")
	require.Len(t, got, 1)
	assert.Equal(t, next.ID, got[0].Task.ID)
	assert.ErrorIs(t, b.Ack(ctx, leases[0]), queue.ErrLeaseLost)
}

// TestWaitingFetchWakesForTaskDueSoon: a Fetch waiting with nothing due
// (for up to a second, as its plan says) is woken by a task made due
// within that second, rather than taking it at its next look. It checks
// that a wait ended on the wake stream's entry, not how long it took: the
// task is taken either way.
func TestWaitingFetchWakesForTaskDueSoon(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// prepare sets the task up before the fetcher waits; delay then
		// makes it due at the given time and returns its id.
		prepare func(t *testing.T, b *redisbackend.Backend) (delay func(due time.Time) string)
	}{
		{"enqueued with a close RunAt", func(t *testing.T, b *redisbackend.Backend) func(time.Time) string {
			return func(due time.Time) string {
				task := newTask()
				task.RunAt = due
				require.NoError(t, b.Enqueue(context.Background(), task))
				return task.ID
			}
		}},
		{"given back with a short delay", func(t *testing.T, b *redisbackend.Backend) func(time.Time) string {
			held := leaseOne(t, b)
			return func(due time.Time) string {
				require.NoError(t, b.Retry(context.Background(), held, due, queue.EndFailed))
				return held.Task.ID
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			b := newBackend(t, newClient(t, srv), redisbackend.Config{})
			client := &wakeClient{Client: newClient(t, srv), waiting: make(chan struct{})}
			other := newBackend(t, client, redisbackend.Config{Prefix: b.Prefix()})
			delay := tc.prepare(t, b)
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			type result struct {
				leases []*queue.Lease
				err    error
			}
			done := make(chan result, 1)
			go func() {
				leases, err := other.Fetch(ctx, "waiting", 1, time.Minute)
				done <- result{leases, err}
			}()
			// Its first look finds nothing; then it waits.
			waitFor(t, client.waiting, "the Fetch did not wait")
			id := delay(time.Now().Add(50 * time.Millisecond))
			r := <-done
			require.NoError(t, r.err)
			require.Len(t, r.leases, 1)
			assert.Equal(t, id, r.leases[0].Task.ID)
			assert.True(t, client.woken.Load(), "the waiting Fetch was not woken for the task: it took it at its next look")
		})
	}
}
