package redisbackend_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// errCut stands for whatever cuts a start between its record and its
// queue entry: its process dying, or Redis answering an error.
var errCut = errors.New("start cut")

// cutStart runs start with b's starts cut after the task's record, and
// returns the id of the task it recorded and start's error.
func cutStart(t *testing.T, b *redisbackend.Backend, start func() error) (string, error) {
	t.Helper()
	var id string
	redisbackend.SetCutStart(b, func(got string) error { id = got; return errCut })
	defer redisbackend.SetCutStart(b, nil)
	err := start()
	require.NotEmpty(t, id, "the start did not record its task")
	return id, err
}

// withLimited returns a registry of two flows that do nothing: "f", and
// "limited", which runs one task at a time.
func withLimited() *registry.Registry {
	reg := flowsNamed("f")
	reg.MustRegister("limited", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }), registry.Concurrency(1))
	return reg
}

// cutEnqueue enqueues a task of flow through broker with b's starts cut
// after the task's record, checks that it failed and gave no id, and
// returns the id of the task it recorded.
func cutEnqueue(ctx context.Context, t *testing.T, b *redisbackend.Backend, broker *queue.Broker, flow string, opts queue.EnqueueOptions) string {
	t.Helper()
	var got string
	id, err := cutStart(t, b, func() error {
		var err error
		got, err = broker.Enqueue(ctx, flow, nil, opts)
		return err
	})
	require.ErrorIs(t, err, errCut)
	assert.Empty(t, got, "a cut start gives no id")
	return id
}

// cutRequeue re-queues the dead task dead through broker with b's starts
// cut after the new task's record, checks that it failed and gave no id,
// and returns the id of the task it recorded.
func cutRequeue(ctx context.Context, t *testing.T, b *redisbackend.Backend, broker *queue.Broker, dead string) string {
	t.Helper()
	var got string
	id, err := cutStart(t, b, func() error {
		var err error
		got, err = broker.Requeue(ctx, dead)
		return err
	})
	require.ErrorIs(t, err, errCut)
	assert.Empty(t, got, "a cut re-queue gives no id")
	return id
}

// TestClusterCutStart cuts starts on a Cluster client between the task's
// record and its queue entry and checks that a sweep ends their tasks, as
// FAILURE with a status that says why, live watchers, the listing and the
// counts included, and that it touches no other task: neither one queued,
// nor one due later, nor one waiting in its flow's gate, nor one leased,
// even when the starting set names them.
func TestClusterCutStart(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	client := newClusterClient(t, c)
	b := newBackend(t, client, redisbackend.Config{})
	redisbackend.SetCutAfter(b, 0)
	reg := withLimited()
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	startingKey := b.Prefix() + ":{q:default}:starting"

	full := startInFull(ctx, t, b, broker, client)
	leased, queued := full.leased, full.queued

	// Starts cut after the record: one without an idempotency key, one
	// with one (recorded, then queued by Enqueue), one of a limited flow
	// and one due later.
	plain := cutEnqueue(ctx, t, b, broker, "f", queue.EnqueueOptions{})
	withKey := cutEnqueue(ctx, t, b, broker, "f", queue.EnqueueOptions{IdempotencyKey: "cut"})
	cut := []string{plain, withKey,
		cutEnqueue(ctx, t, b, broker, "limited", queue.EnqueueOptions{}),
		cutEnqueue(ctx, t, b, broker, "f", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})}

	// Before a sweep, each is PENDING and runs nowhere; a retry with the
	// key gets the cut task's id.
	retried, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "cut"})
	require.NoError(t, err)
	require.Equal(t, withKey, retried)
	for _, id := range cut {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		require.Equal(t, progress.StatePending, snap.State)
	}
	live, err := b.Subscribe(ctx, plain, "")
	require.NoError(t, err)

	// Left-overs the sweep must see through: a start cut before its
	// record, and members naming tasks started in full (the removal of
	// their member lost): one leased, one whose member's score is not
	// its start's.
	gone := queue.NewID()
	require.NoError(t, client.Do(ctx, client.B().Zadd().Key(startingKey).ScoreMember().ScoreMember(1, gone).Build()).Error())
	score, err := client.Do(ctx, client.B().Hget().Key(b.Prefix()+":{"+leased+"}:task").Field("starting").Build()).ToString()
	require.NoError(t, err)
	ms, err := strconv.ParseFloat(score, 64)
	require.NoError(t, err)
	require.NoError(t, client.Do(ctx, client.B().Zadd().Key(startingKey).ScoreMember().
		ScoreMember(ms, leased).ScoreMember(1, queued).Build()).Error())

	// The listing and the counts show the cut tasks as failed.
	assert.ElementsMatch(t, cut, sweepEndsCut(ctx, t, b, client, full, live, cut))
	stats, err := b.TaskStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(len(cut)), stats.Counts.Failure)

	// A retry with the key now sees why its task did not run; a sweep
	// finds nothing more.
	retried, err = broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "cut"})
	require.NoError(t, err)
	require.Equal(t, withKey, retried)
	info, err := broker.Task(ctx, retried)
	require.NoError(t, err)
	assert.Equal(t, progress.StateFailure, info.Snapshot.State)
	ended, err := b.EndCutStarts(ctx)
	require.NoError(t, err)
	assert.Zero(t, ended)
}

// TestWorkersEndCutStarts checks, on a single Redis and on a cluster,
// that the heartbeats of a worker end the tasks of cut starts (on a
// cluster, of any flow; of a limited flow, and a re-queue, on both), and
// that the worker runs the tasks started in full, the dead task's second
// re-queue included.
func TestWorkersEndCutStarts(t *testing.T) {
	t.Parallel()
	onSingleAndCluster(t, func(t *testing.T, cluster bool, connect func() rueidis.Client) {
		cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
		web := newBackend(t, connect(), cfg)
		reg := withLimited()
		broker := queue.NewBroker(web, web, queue.BrokerConfig{Registry: reg})
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()

		dead := buried(ctx, t, web, broker, "f")
		want := map[string]progress.State{
			cutEnqueue(ctx, t, web, broker, "limited", queue.EnqueueOptions{}): progress.StateFailure,
			cutRequeue(ctx, t, web, broker, dead):                              progress.StateFailure,
		}
		if cluster {
			want[cutEnqueue(ctx, t, web, broker, "f", queue.EnqueueOptions{})] = progress.StateFailure
		}
		for _, name := range []string{"f", "limited"} {
			id, err := broker.Enqueue(ctx, name, nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			want[id] = progress.StateSuccess
		}
		again, err := broker.Requeue(ctx, dead)
		require.NoError(t, err)
		want[again] = progress.StateSuccess

		workerSide := newBackend(t, connect(), cfg)
		redisbackend.SetCutAfter(workerSide, 0)
		redisbackend.SetSweepEvery(workerSide, time.Millisecond)
		startWorker(t, queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
			Registry: reg, Logger: quiet, Heartbeat: 50 * time.Millisecond,
		}))
		for task, want := range want {
			var snap progress.Snapshot
			eventually(t, func() bool {
				snap, _, err = web.Snapshot(ctx, task)
				require.NoError(t, err)
				return snap.State.Terminal()
			}, "task "+task+" did not end")
			assert.Equal(t, want, snap.State, "task %s: %s", task, snap.Details.Status)
		}
	})
}

// TestClusterStartRefusedByAFullQueueMaster cuts a start at its last step
// the way a full Redis does: the queue's master refuses to queue the task
// (OOM) but would still take commands that free memory, such as a removal
// of the start from the starting set. The start must stay there, so that
// a sweep ends its task.
func TestClusterStartRefusedByAFullQueueMaster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	redisbackend.SetCutAfter(b, 0)
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	queueMaster := slotOwner(t, c, b.Prefix()+":{q:default}:stream").Addr
	setMaxMemory := func(v string) {
		t.Helper()
		_, err := redisproc.DoString(queueMaster, "CONFIG", "SET", "maxmemory", v)
		require.NoError(t, err)
	}
	t.Cleanup(func() { setMaxMemory("0") })

	for _, runAt := range []time.Time{{}, time.Now().Add(time.Hour)} {
		var id string
		redisbackend.SetCutStart(b, func(got string) error {
			id = got
			setMaxMemory("1") // the queue's master is full from now on
			return nil
		})
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{RunAt: runAt})
		redisbackend.SetCutStart(b, nil)
		setMaxMemory("0")
		require.Error(t, err)
		require.Contains(t, err.Error(), "OOM")

		ended, err := b.EndCutStarts(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, ended)
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, redisbackend.CutStatus, snap.Details.Status)
	}
}

// TestClusterStartMarkRefused: on a Cluster client a start sends its
// mark in the starting set and its record in one round trip, to two
// nodes. When the queue's master refuses the mark (full) and the task's
// master writes the record, the start fails and takes the record back:
// no record is left that no sweep would find.
func TestClusterStartMarkRefused(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	queueMaster := slotOwner(t, c, b.Prefix()+":{q:default}:stream").Addr
	_, err := redisproc.DoString(queueMaster, "CONFIG", "SET", "maxmemory", "1")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = redisproc.DoString(queueMaster, "CONFIG", "SET", "maxmemory", "0") })

	elsewhere := 0
	for elsewhere < 3 {
		task := newTask()
		if slotOwner(t, c, b.Prefix()+":{"+task.ID+"}:task").Addr != queueMaster {
			elsewhere++
		}
		err := b.CreateAndEnqueue(ctx, task)
		require.ErrorContains(t, err, "OOM")
		_, err = b.Get(ctx, task.ID)
		assert.ErrorIs(t, err, queue.ErrNotFound, "no record is left of a start whose mark was refused")
		n, err := redisproc.Do(queueMaster, "ZCARD", b.Prefix()+":{q:default}:starting")
		require.NoError(t, err)
		assert.EqualValues(t, 0, n, "nothing is marked")
	}
}

// onSingleAndCluster runs test on a single redis-server and on a
// 3-master cluster, each started for it; connect makes a client to it.
func onSingleAndCluster(t *testing.T, test func(t *testing.T, cluster bool, connect func() rueidis.Client)) {
	t.Helper()
	for _, mode := range []string{"single", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			if mode == "single" {
				srv := redistest.Start(t)
				test(t, false, func() rueidis.Client { return newClient(t, srv) })
				return
			}
			c := redistest.StartCluster(t, redistest.ClusterOptions{})
			test(t, true, func() rueidis.Client { return newClusterClient(t, c) })
		})
	}
}

// buried enqueues a task of flow, leases it and buries it, and returns
// its id.
func buried(ctx context.Context, t *testing.T, b *redisbackend.Backend, broker *queue.Broker, flow string) string {
	t.Helper()
	id, err := broker.Enqueue(ctx, flow, nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.Equal(t, id, leases[0].Task.ID)
	require.NoError(t, b.Bury(ctx, leases[0], "failed"))
	return id
}

// deadIDs returns the ids of b's dead-letter set.
func deadIDs(ctx context.Context, t *testing.T, b *redisbackend.Backend) []string {
	t.Helper()
	dead, err := b.Dead(ctx, 0)
	require.NoError(t, err)
	var ids []string
	for _, d := range dead {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestCutStartsInSteps cuts, on a single Redis and on a cluster, the
// starts taken in steps whatever the client: those of tasks of limited
// flows (recorded, then put in their gate by the admit script), with and
// without an idempotency key and due later, and re-queues of dead tasks
// (the new task recorded, then the script that takes the dead one out of
// the dead-letter set). A sweep must end each cut task as FAILURE with
// the status that says why, and touch no other task: queued, due later,
// waiting in its gate, admitted or leased. A dead task whose re-queue was
// cut stays dead, and re-queuing it again makes one new task, which is
// queued and left alone by the sweeps.
func TestCutStartsInSteps(t *testing.T) {
	t.Parallel()
	onSingleAndCluster(t, func(t *testing.T, _ bool, connect func() rueidis.Client) {
		client := connect()
		b := newBackend(t, client, redisbackend.Config{})
		redisbackend.SetCutAfter(b, 0)
		reg := withLimited()
		broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		deadPlain := buried(ctx, t, b, broker, "f")
		deadLimited := buried(ctx, t, b, broker, "limited")
		require.ElementsMatch(t, []string{deadPlain, deadLimited}, deadIDs(ctx, t, b))

		full := startInFull(ctx, t, b, broker, client)

		// Starts cut after the record.
		requeued := cutRequeue(ctx, t, b, broker, deadPlain)
		cut := []string{requeued, cutRequeue(ctx, t, b, broker, deadLimited),
			cutEnqueue(ctx, t, b, broker, "limited", queue.EnqueueOptions{}),
			cutEnqueue(ctx, t, b, broker, "limited", queue.EnqueueOptions{IdempotencyKey: "cut"}),
			cutEnqueue(ctx, t, b, broker, "limited", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})}

		for _, id := range cut {
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			require.Equal(t, progress.StatePending, snap.State)
		}
		assert.ElementsMatch(t, []string{deadPlain, deadLimited}, deadIDs(ctx, t, b), "a cut re-queue leaves its task dead")
		live, err := b.Subscribe(ctx, requeued, "")
		require.NoError(t, err)

		listed := sweepEndsCut(ctx, t, b, client, full, live, cut)
		assert.Subset(t, listed, cut, "the listing shows the cut tasks as failed")

		// The dead tasks are re-queued again, each as one new task,
		// which the sweeps leave alone; a third re-queue finds them
		// gone from the dead-letter set.
		again, err := broker.Requeue(ctx, deadPlain)
		require.NoError(t, err)
		againLimited, err := broker.Requeue(ctx, deadLimited)
		require.NoError(t, err)
		assert.NotContains(t, cut, again)
		assert.NotContains(t, cut, againLimited)
		assert.Empty(t, deadIDs(ctx, t, b))
		_, err = broker.Requeue(ctx, deadPlain)
		require.ErrorIs(t, err, queue.ErrNotDead)
		ended, err := b.EndCutStarts(ctx)
		require.NoError(t, err)
		assert.Zero(t, ended)
		for _, id := range []string{again, againLimited} {
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, progress.StatePending, snap.State, "task %s", id)
		}
		leases, err := b.Fetch(ctx, "w", 10, time.Minute)
		require.NoError(t, err)
		var fetched []string
		for _, l := range leases {
			fetched = append(fetched, l.Task.ID)
		}
		assert.Contains(t, fetched, again, "the re-queued task is queued")
		assert.Contains(t, fetched, full.admitted)
		assert.NotContains(t, fetched, againLimited, "the re-queued task of the limited flow waits for the slot the admitted task holds")
	})
}

// startedInFull are tasks started in full, which no sweep may touch.
type startedInFull struct {
	leased, queued, admitted string
	snapshots                map[string]progress.Snapshot
}

// startInFull starts, through broker, tasks of the flows "f" and
// "limited" (one slot) that no sweep may touch: one leased, one queued,
// one due later, one admitted, one waiting in its gate, and one of each
// flow with an idempotency key; and checks that each marked its start
// done, if it was in the starting set.
func startInFull(ctx context.Context, t *testing.T, b *redisbackend.Backend, broker *queue.Broker, client rueidis.Client) startedInFull {
	t.Helper()
	start := func(flow string, opts queue.EnqueueOptions) string {
		t.Helper()
		id, err := broker.Enqueue(ctx, flow, nil, opts)
		require.NoError(t, err)
		return id
	}
	var full startedInFull
	full.leased = start("f", queue.EnqueueOptions{})
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.Equal(t, full.leased, leases[0].Task.ID)
	full.queued = start("f", queue.EnqueueOptions{})
	full.admitted = start("limited", queue.EnqueueOptions{})
	ids := []string{full.leased, full.queued, full.admitted,
		start("f", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)}),
		start("limited", queue.EnqueueOptions{}),
		start("f", queue.EnqueueOptions{IdempotencyKey: "done"}),
		start("limited", queue.EnqueueOptions{IdempotencyKey: "done limited"})}
	full.snapshots = map[string]progress.Snapshot{}
	for _, id := range ids {
		full.snapshots[id], _, err = b.Snapshot(ctx, id)
		require.NoError(t, err)
	}
	n, err := client.Do(ctx, client.B().Zcount().Key(b.Prefix()+":{q:default}:starting").Min("-inf").Max("(9007199254740992").Build()).AsInt64()
	require.NoError(t, err)
	require.Zero(t, n, "a start in full marks itself done in the starting set")
	return full
}

// assertUntouched checks that the tasks of full are as they were.
func (full startedInFull) assertUntouched(ctx context.Context, t *testing.T, b *redisbackend.Backend) {
	t.Helper()
	for id, before := range full.snapshots {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, before, snap, "task %s", id)
	}
}

// assertCut checks that the tasks ids were ended as cut starts.
func assertCut(ctx context.Context, t *testing.T, b *redisbackend.Backend, ids ...string) {
	t.Helper()
	for _, id := range ids {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, snap.State, "task %s", id)
		assert.Equal(t, redisbackend.CutStatus, snap.Details.Status, "task %s", id)
	}
}

// sweepEndsCut runs a sweep of b and checks that it ends the tasks cut,
// the event of one of them reaching its watcher live, leaves the tasks
// of full as they were, and empties the starting set; it returns the
// tasks that b then lists as failed.
func sweepEndsCut(ctx context.Context, t *testing.T, b *redisbackend.Backend, client rueidis.Client,
	full startedInFull, live <-chan progress.Event, cut []string) []string {
	t.Helper()
	ended, err := b.EndCutStarts(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(cut), ended)
	assertCut(ctx, t, b, cut...)
	select {
	case e := <-live:
		assert.Equal(t, progress.StateFailure, e.State)
		assert.Equal(t, redisbackend.CutStatus, e.Status)
	case <-ctx.Done():
		require.FailNow(t, "the watcher of a cut start heard nothing")
	}
	full.assertUntouched(ctx, t, b)
	n, err := client.Do(ctx, client.B().Zcard().Key(b.Prefix()+":{q:default}:starting").Build()).AsInt64()
	require.NoError(t, err)
	assert.Zero(t, n, "the sweep forgets what it has looked at")
	page, err := b.ListTasks(ctx, queue.ListOptions{State: progress.StateFailure, Limit: 20})
	require.NoError(t, err)
	var listed []string
	for _, s := range page.Tasks {
		listed = append(listed, s.ID)
	}
	return listed
}
