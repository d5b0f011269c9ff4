package redisbackend_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

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
	reg := flowsNamed("f")
	reg.MustRegister("limited", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }), registry.Concurrency(1))
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	startingKey := b.Prefix() + ":{q:default}:starting"

	// Tasks started in full, which no sweep may touch.
	leased, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.Equal(t, leased, leases[0].Task.ID)
	queued, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	later, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	admitted, err := broker.Enqueue(ctx, "limited", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	gated, err := broker.Enqueue(ctx, "limited", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	keyed, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "done"})
	require.NoError(t, err)
	untouched := map[string]progress.Snapshot{}
	for _, id := range []string{leased, queued, later, admitted, gated, keyed} {
		untouched[id], _, err = b.Snapshot(ctx, id)
		require.NoError(t, err)
	}
	n, err := client.Do(ctx, client.B().Zcount().Key(startingKey).Min("-inf").Max("(9007199254740992").Build()).AsInt64()
	require.NoError(t, err)
	require.Zero(t, n, "a start in full marks itself done in the starting set")

	// Starts cut after the record: one without an idempotency key, one
	// with one (recorded, then queued by Enqueue), one of a limited flow
	// and one due later.
	var got string
	plain, err := cutStart(t, b, func() error {
		got, err = broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
		return err
	})
	require.ErrorIs(t, err, errCut)
	assert.Empty(t, got, "a cut start gives no id")
	withKey, err := cutStart(t, b, func() error {
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "cut"})
		return err
	})
	require.ErrorIs(t, err, errCut)
	limited, err := cutStart(t, b, func() error {
		_, err := broker.Enqueue(ctx, "limited", nil, queue.EnqueueOptions{})
		return err
	})
	require.ErrorIs(t, err, errCut)
	delayed, err := cutStart(t, b, func() error {
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
		return err
	})
	require.ErrorIs(t, err, errCut)
	cut := []string{plain, withKey, limited, delayed}

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

	ended, err := b.EndCutStarts(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(cut), ended)

	for _, id := range cut {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, snap.State, "task %s", id)
		assert.Equal(t, redisbackend.CutStatus, snap.Details.Status, "task %s", id)
	}
	select {
	case e := <-live:
		assert.Equal(t, progress.StateFailure, e.State)
		assert.Equal(t, redisbackend.CutStatus, e.Status)
	case <-ctx.Done():
		require.FailNow(t, "the watcher of a cut start heard nothing")
	}
	for id, before := range untouched {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, before, snap, "task %s", id)
	}
	n, err = client.Do(ctx, client.B().Zcard().Key(startingKey).Build()).AsInt64()
	require.NoError(t, err)
	assert.Zero(t, n, "the sweep forgets what it has looked at")

	// The listing and the counts show the cut tasks as failed.
	page, err := b.ListTasks(ctx, queue.ListOptions{State: progress.StateFailure, Limit: 10})
	require.NoError(t, err)
	var listed []string
	for _, s := range page.Tasks {
		listed = append(listed, s.ID)
	}
	assert.ElementsMatch(t, cut, listed)
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
	ended, err = b.EndCutStarts(ctx)
	require.NoError(t, err)
	assert.Zero(t, ended)
}

// TestClusterWorkersEndCutStarts checks that the heartbeats of a worker on
// a Cluster client end the task of a cut start, and that the worker runs
// the tasks started in full.
func TestClusterWorkersEndCutStarts(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	web := newBackend(t, newClusterClient(t, c), cfg)
	reg := flowsNamed("f")
	broker := queue.NewBroker(web, web, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	id, err := cutStart(t, web, func() error {
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
		return err
	})
	require.ErrorIs(t, err, errCut)
	normal, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
	require.NoError(t, err)

	workerSide := newBackend(t, newClusterClient(t, c), cfg)
	redisbackend.SetCutAfter(workerSide, 0)
	redisbackend.SetSweepEvery(workerSide, time.Millisecond)
	startWorker(t, queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
		Registry: reg, Logger: quiet, Heartbeat: 50 * time.Millisecond,
	}))
	for task, want := range map[string]progress.State{id: progress.StateFailure, normal: progress.StateSuccess} {
		var snap progress.Snapshot
		eventually(t, func() bool {
			snap, _, err = web.Snapshot(ctx, task)
			require.NoError(t, err)
			return snap.State.Terminal()
		}, "task "+task+" did not end")
		assert.Equal(t, want, snap.State, "task %s: %s", task, snap.Details.Status)
	}
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
