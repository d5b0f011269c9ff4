package redisbackend_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

func TestDurableModeConfig(t *testing.T) {
	t.Parallel()
	client := newClient(t, redistest.Start(t))
	for _, tc := range []struct {
		cfg  redisbackend.Config
		want string
	}{
		{redisbackend.Config{WaitReplicas: -1}, "must not be negative"},
		{redisbackend.Config{WaitReplicas: 1, WaitTimeout: 5 * time.Second}, "must be shorter than OpTimeout"},
		{redisbackend.Config{WaitReplicas: 1, WaitTimeout: time.Second, OpTimeout: time.Second}, "must be shorter than OpTimeout"},
	} {
		_, err := redisbackend.New(client, tc.cfg)
		assert.ErrorContains(t, err, tc.want, "%+v", tc.cfg)
	}
	_, err := redisbackend.New(clusterMode{client}, redisbackend.Config{WaitReplicas: 1})
	assert.ErrorContains(t, err, "not available on a Redis Cluster client")
	b, err := redisbackend.New(client, redisbackend.Config{WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, b.Close())
}

// logBuffer is a slog handler's output, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDurableModeWaitsForTheReplica runs tasks on a primary with one
// replica in durable mode: an accepted task is on the replica when
// Enqueue returns, each task costs one WAIT to accept and one to end, and
// once the replica stops following, enqueues fail with
// queue.ErrUnavailable and ends are logged.
//
// The wait is bounded far above a loaded machine's replication delay: a
// confirmation that comes late fails an enqueue of the first part. Only
// the second part, where nothing can be confirmed, waits it out (three
// times).
func TestDurableModeWaitsForTheReplica(t *testing.T) {
	t.Parallel()
	const waitTimeout = 2 * time.Second
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary, redistest.Options{})
	logs := &logBuffer{}
	b := newBackend(t, newClient(t, primary), redisbackend.Config{
		WaitReplicas: 1, WaitTimeout: waitTimeout,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	reg := registry.New()
	reg.MustRegister("report", reportingFlow)
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Concurrency: 4, Logger: quiet}))
	ctx := context.Background()
	succeeded := successes(t, primary, b.Prefix())

	run := func() string {
		t.Helper()
		id, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		return id
	}
	succeeded(run()) // loads the scripts (a NOSCRIPT round trip waits too)
	require.NoError(t, primary.Do("CONFIG", "RESETSTAT").Error())
	const tasks = 10
	for range tasks {
		id := run()
		n, err := replica.Do("EXISTS", b.Prefix()+":{"+id+"}:task").AsInt64()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "task %s is on the replica when Enqueue returns", id)
		succeeded(id)
	}
	calls := commandCalls(t, primary)
	assert.Equal(t, 2*tasks, calls["wait"], "one WAIT to accept a task, one to end it")
	require.NotContains(t, logs.String(), "not confirmed by the replicas", "a confirmation came later than %v", waitTimeout)

	// Another two-step enqueue, and a re-queue, wait as well.
	task := newTask()
	require.NoError(t, b.Enqueue(ctx, task))
	n, err := replica.Do("EXISTS", b.Prefix()+":{"+task.ID+"}:task").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "an Enqueue is on the replica when it returns")

	// The replica stops following: nothing can be confirmed any more.
	require.NoError(t, replica.Do("REPLICAOF", "NO", "ONE").Error())
	_, err = broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.ErrorIs(t, err, queue.ErrUnavailable)
	assert.ErrorContains(t, err, "not confirmed by the replicas in time: 0 of 1 replicas within "+waitTimeout.String())
	err = b.Enqueue(ctx, newTask())
	require.ErrorIs(t, err, queue.ErrUnavailable)
	// The task the broker could not confirm is on the primary, and runs.
	eventually(t, func() bool { return strings.Contains(logs.String(), "not confirmed by the replicas") },
		"the end of the task that ran anyway is logged as not confirmed")
	assert.Contains(t, logs.String(), "the task may run again")
}

// TestDurableEndWaitsBeforeTheHooks: with finish hooks a worker records a
// task's end, runs the hooks and then acknowledges the task; in durable
// mode the end waits for the replica before the hooks run (the hook finds
// it there), and the acknowledgement waits again.
func TestDurableEndWaitsBeforeTheHooks(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary, redistest.Options{})
	b := newBackend(t, newClient(t, primary), redisbackend.Config{WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	reg := registry.New()
	reg.MustRegister("report", reportingFlow)
	onReplica := make(chan string, 16)
	hook := func(_ context.Context, f queue.Finished) error {
		state, err := replica.Do("HGET", b.Prefix()+":{"+f.Task.ID+"}:task", "state").ToString()
		if err != nil {
			state = err.Error()
		}
		onReplica <- state
		return nil
	}
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Concurrency: 4, Logger: quiet, OnFinish: []queue.FinishHook{hook}}))
	ctx := context.Background()
	succeeded := successes(t, primary, b.Prefix())
	run := func() {
		t.Helper()
		id, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		succeeded(id)
		assert.Equal(t, string(progress.StateSuccess), <-onReplica, "the end is on the replica when the hook runs")
	}
	// acked waits for the WAITs of n tasks: the acknowledgement's WAIT
	// follows its script, so the lease may be gone before it has run.
	acked := func(n int) {
		t.Helper()
		eventually(t, func() bool {
			held, err := primary.Do("ZCARD", b.Prefix()+":{q:"+b.Queue()+"}:leased").AsInt64()
			return err == nil && held == 0
		}, "the last task is acknowledged")
		eventually(t, func() bool { return commandCalls(t, primary)["wait"] >= 3*n },
			"three WAITs a task")
	}
	run()    // loads the scripts
	acked(1) // its acknowledgement, after the hook, is not counted below
	require.NoError(t, primary.Do("CONFIG", "RESETSTAT").Error())
	const tasks = 5
	for range tasks {
		run()
	}
	acked(tasks)
	assert.Equal(t, 3*tasks, commandCalls(t, primary)["wait"], "a WAIT to accept a task, one for its end before the hooks, one for its acknowledgement")
}

// TestDurableAckLeavesATaskThatHasNotEnded: in durable mode an Ack
// releases the lease of a task that has ended or has no progress record,
// and refuses, keeping the lease, that of a task still PENDING or
// PROGRESS on the primary: a worker that found the task ended or gone on
// another server (a former primary rejoining as an empty replica, or one
// that died with the task's end) would otherwise delete the entry of a
// live task, which would never end. Without durable mode, Ack is
// unchanged.
func TestDurableAckLeavesATaskThatHasNotEnded(t *testing.T) {
	t.Parallel()
	primary := redistest.Start(t)
	redistest.StartReplica(t, primary, redistest.Options{})
	client := newClient(t, primary)
	durable := newBackend(t, client, redisbackend.Config{WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	ctx := context.Background()
	leaseOne := func(b *redisbackend.Backend) *queue.Lease {
		t.Helper()
		require.NoError(t, b.CreateAndEnqueue(ctx, newTask()))
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		return leases[0]
	}

	live := leaseOne(durable)
	err := durable.Ack(ctx, live)
	require.Error(t, err, "a PENDING task is not acknowledged")
	assert.NotErrorIs(t, err, queue.ErrLeaseLost)
	assert.ErrorContains(t, err, "has not ended")
	_, err = durable.Append(ctx, live.Task.ID, progress.LogEvent("running"))
	require.NoError(t, err)
	assert.ErrorContains(t, durable.Ack(ctx, live), "has not ended", "nor a PROGRESS one")
	require.NoError(t, durable.Extend(ctx, live, time.Minute), "the lease is still held")
	_, err = durable.Append(ctx, live.Task.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
	require.NoError(t, err)
	require.NoError(t, durable.Ack(ctx, live), "an ended task is acknowledged")
	assert.ErrorIs(t, durable.Ack(ctx, live), queue.ErrLeaseLost, "once")

	gone := leaseOne(durable)
	require.NoError(t, primary.Do("DEL", durable.Prefix()+":{"+gone.Task.ID+"}:task").Error())
	require.NoError(t, durable.Ack(ctx, gone), "a task without a record is acknowledged")

	plain := newBackend(t, client, redisbackend.Config{})
	require.NoError(t, plain.Ack(ctx, leaseOne(plain)), "without durable mode, a PENDING task is acknowledged")
}
