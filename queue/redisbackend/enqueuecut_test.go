package redisbackend_test

import (
	"context"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestEnqueueCutThenRetriedRuns starts a task with an idempotency key
// through a Broker whose progress store is not the backend (a memory
// store), on a single Redis, so that it takes two steps: the store's
// Create, then Backend.Enqueue. The round trip of Enqueue is cut after
// each of its commands in turn, as a process that dies there leaves it;
// the start is then retried with the same key (cut before its first, the
// retry waits for the record a few seconds, then queues the task itself:
// see queue's enqueuedBefore). The retry either fails, or
// gives the task's id and the task runs: a worker takes it and it ends.
// It is never given for a task that nobody will run, and no record is
// left without its expiry. (Enqueue once sent the record, its expiry, its
// index entry and its queue entry as commands of one pipeline: cut after
// the record, the retry found the record and gave the id of a task never
// queued, which no sweep looks at, and whose hash never expired.)
func TestEnqueueCutThenRetriedRuns(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	reg := flowsNamed("f")
	opts := queue.EnqueueOptions{IdempotencyKey: "k"}
	for keep := 0; ; keep++ {
		cut := &cutClient{Client: newClient(t, srv), at: "*", keep: keep}
		b := newBackend(t, cut, redisbackend.Config{})
		store := progress.NewMemoryStore(progress.MemoryConfig{})
		broker := queue.NewBroker(b, store, queue.BrokerConfig{Registry: reg, Logger: quiet})
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{}) // loads the scripts
		require.NoError(t, err)

		// The memory store takes no round trip: the first one is
		// Enqueue's.
		cut.armed.Store(true)
		_, _ = broker.Enqueue(ctx, "f", nil, opts)
		require.False(t, cut.armed.Load(), "the round trip of Enqueue came")
		key := b.Prefix() + ":{" + queue.IdempotentID("", "k") + "}:task"
		ttl, err := srv.Do("PTTL", key).AsInt64()
		require.NoError(t, err)
		assert.NotEqual(t, int64(-1), ttl, "a record left has its expiry (cut after %d commands)", keep)
		id, err := broker.Enqueue(ctx, "f", nil, opts)
		if err != nil {
			t.Logf("cut after %d commands: the retry fails: %v", keep, err)
		} else {
			startWorker(t, queue.NewWorker(b, store, queue.WorkerConfig{Registry: reg, Logger: quiet}))
			eventually(t, func() bool {
				snap, _, err := store.Snapshot(ctx, id)
				return err == nil && snap.State == progress.StateSuccess
			}, "the task whose id the retry gave runs and ends")
			assert.Equal(t, id, queue.IdempotentID("", "k"))
		}
		if cut.cuts.Load() == 0 {
			return // nothing was cut: every point is done
		}
	}
}

// TestFlowOfARefusedStartIsNamedByTheNext starts the first task of flow g
// for a caller over its pending limit, which the create script refuses,
// then one for another caller, which it accepts: g is in the stats at
// once, with its task. (A process once took g as named in the flows set
// as it sent the script that refused its task: g stayed out of the flows
// set, and of the stats, until that process named it again, a minute
// later.)
func TestFlowOfARefusedStartIsNamedByTheNext(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f", "g"),
		CallerLimits: queue.CallerLimits{MaxPending: 1}})
	ctx := context.Background()
	_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "c"})
	require.NoError(t, err)
	_, err = broker.Enqueue(ctx, "g", nil, queue.EnqueueOptions{Caller: "c"})
	require.ErrorIs(t, err, queue.ErrCallerLimit)
	id, err := broker.Enqueue(ctx, "g", nil, queue.EnqueueOptions{Caller: "d"})
	require.NoError(t, err)

	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.StateCounts{Pending: 1}, flowCounts(st, "g"), "flow g, named by its first task accepted")
	assert.Equal(t, []string{id}, listedIDs(ctx, t, b, queue.ListOptions{Flow: "g"}))
}

// TestClusterEnqueueCutThenRetriedEnds is TestEnqueueCutThenRetriedRuns
// on a Redis Cluster client, where Enqueue takes three round trips (the
// starting set, the record, then the index and queue entries and the
// mark of done, see starts.go), with a Broker whose store is the backend
// (a start with a key takes the store's Create, then Enqueue, there):
// the last round trip is cut after each of its commands in turn, and the
// start retried with the same key. The retry gives the task's id, and
// the task either runs or, once a sweep has found its start cut, ends as
// FAILURE saying that it never started: it never waits as PENDING for a
// run that will not come. (With another store, see
// TestStartInStepsCutWithAnotherStoreRuns.)
func TestClusterEnqueueCutThenRetriedEnds(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := context.Background()
	reg := flowsNamed("f")
	opts := queue.EnqueueOptions{IdempotencyKey: "k"}
	for keep := 0; ; keep++ {
		cut := &cutClient{Client: newClusterClient(t, c), at: "XADD", keep: keep}
		b := newBackend(t, cut, redisbackend.Config{})
		redisbackend.SetCutAfter(b, 0)
		store := b
		broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg, Logger: quiet})
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{}) // loads the scripts
		require.NoError(t, err)

		cut.armed.Store(true)
		_, _ = broker.Enqueue(ctx, "f", nil, opts)
		require.False(t, cut.armed.Load(), "the round trip that queues the task came")
		id, err := broker.Enqueue(ctx, "f", nil, opts)
		require.NoError(t, err, "the retry finds the task (cut after %d commands)", keep)
		_, err = b.EndCutStarts(ctx)
		require.NoError(t, err)
		// Its worker on a backend of its own, which takes a start as cut
		// after a minute, as it should: none is cut from here on.
		w := newBackend(t, newClusterClient(t, c), redisbackend.Config{Prefix: b.Prefix()})
		startWorker(t, queue.NewWorker(w, store, queue.WorkerConfig{Registry: reg, Logger: quiet}))
		var snap progress.Snapshot
		eventually(t, func() bool {
			snap, _, err = store.Snapshot(ctx, id)
			return err == nil && snap.State.Terminal()
		}, "the task whose id the retry gave ends")
		if snap.State == progress.StateFailure {
			assert.Equal(t, redisbackend.CutStatus, snap.Details.Status, "cut after %d commands", keep)
		}
		if cut.cuts.Load() == 0 {
			return // nothing was cut: every point is done
		}
	}
}

// TestStartInStepsCutWithAnotherStoreRuns cuts, between the record and
// the step that queues it, a start taken in steps (on a Redis Cluster
// client; of a limited flow on any) with an idempotency key, through a
// Broker whose progress store is not the backend (a memory store): a
// sweep of cut starts cannot end such a task, whose progress is not in
// its hash. The start is retried with the same key, before any sweep or
// after one: the retry gives the task's id, and the task runs and ends.
// (A sweep once left such a start alone and forgot it, and a retry found
// the record and was given the id of a task that nobody would run.)
func TestStartInStepsCutWithAnotherStoreRuns(t *testing.T) {
	t.Parallel()
	onSingleAndCluster(t, func(t *testing.T, cluster bool, connect func() rueidis.Client) {
		ctx := context.Background()
		reg := withLimited()
		flows := []string{"limited"}
		if cluster {
			flows = append(flows, "f")
		}
		for _, flow := range flows {
			for _, swept := range []bool{false, true} {
				b := newBackend(t, connect(), redisbackend.Config{})
				redisbackend.SetCutAfter(b, 0)
				store := progress.NewMemoryStore(progress.MemoryConfig{})
				broker := queue.NewBroker(b, store, queue.BrokerConfig{Registry: reg, Logger: quiet})
				opts := queue.EnqueueOptions{IdempotencyKey: "k"}
				id := cutEnqueue(ctx, t, b, broker, flow, opts)
				if swept {
					_, err := b.EndCutStarts(ctx)
					require.NoError(t, err)
				}
				got, err := broker.Enqueue(ctx, flow, nil, opts)
				require.NoError(t, err, "%s, swept %v: the retry", flow, swept)
				require.Equal(t, id, got)
				// Its worker on a backend of its own, which takes a
				// start as cut after a minute: none is cut from here on.
				w := newBackend(t, connect(), redisbackend.Config{Prefix: b.Prefix()})
				startWorker(t, queue.NewWorker(w, store, queue.WorkerConfig{Registry: reg, Logger: quiet}))
				eventually(t, func() bool {
					snap, _, err := store.Snapshot(ctx, id)
					return err == nil && snap.State == progress.StateSuccess
				}, flow+": the task whose id the retry gave runs and ends")
			}
		}
	})
}
