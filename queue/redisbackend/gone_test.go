package redisbackend_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// TestWorkerStopsTheRunOfAVanishedTask: a flow that keeps reporting while
// its task's records vanish (deleted, or Redis restarted without its
// data) is stopped at its next report, long before its lease would tell;
// the worker drops the task and goes on running new ones.
func TestWorkerStopsTheRunOfAVanishedTask(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		vanish func(t *testing.T, srv *redistest.Server, prefix, id string)
	}{
		{"its keys deleted", func(t *testing.T, srv *redistest.Server, prefix, id string) {
			k := prefix + ":{" + id + "}:"
			require.NoError(t, srv.Do("DEL", k+"task", k+"events", k+"steps").Error())
		}},
		{"Redis restarted empty", func(t *testing.T, srv *redistest.Server, _, _ string) {
			srv.Kill()
			srv.Restart()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
			web := newBackend(t, newClient(t, srv), cfg)
			workerSide := newBackend(t, newClient(t, srv), cfg)
			reg := registry.New()
			broker := queue.NewBroker(web, web, queue.BrokerConfig{Registry: reg})

			var (
				started  = make(chan struct{}, 10)
				stopped  = make(chan error, 10)
				reported atomic.Int64
			)
			reg.MustRegister("chatty", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
				started <- struct{}{}
				for i := 0; ; i++ {
					select {
					case <-ctx.Done():
						stopped <- context.Cause(ctx)
						return nil, ctx.Err()
					case <-time.After(10 * time.Millisecond):
					}
					task.Progress.Progress(i%100, "talking")
					reported.Add(1)
				}
			}))
			reg.MustRegister("quick", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
			// A lease far longer than the test: only the reports can tell
			// the worker that the task is gone.
			startWorker(t, queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
				Registry: reg, Lease: 10 * time.Minute, Logger: quiet,
			}))

			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			id, err := broker.Enqueue(ctx, "chatty", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			select {
			case <-started:
			case <-ctx.Done():
				require.FailNow(t, "the flow did not start")
			}
			eventually(t, func() bool { return reported.Load() > 3 }, "the flow reports")

			tc.vanish(t, srv, cfg.Prefix, id)
			select {
			case cause := <-stopped:
				assert.Error(t, cause, "the run's context was cancelled with a cause")
			case <-ctx.Done():
				require.FailNow(t, "the flow of the vanished task was not stopped", "%d reports so far", reported.Load())
			}

			// The task stays gone: nothing of the stopped run brought
			// its records back, and nobody runs it again.
			_, _, err = web.Snapshot(ctx, id)
			assert.ErrorIs(t, err, progress.ErrNotFound, "the vanished task's record")
			eventually(t, func() bool { return nothingLeased(t, srv, cfg.Prefix) }, "the vanished task's lease is released")

			// The worker goes on with new tasks.
			var next string
			eventually(t, func() bool {
				next, err = broker.Enqueue(ctx, "quick", nil, queue.EnqueueOptions{})
				if err != nil {
					require.ErrorIs(t, err, queue.ErrUnavailable, "the only failure expected is an unreachable Redis")
				}
				return err == nil
			}, "enqueue after the loss")
			eventually(t, func() bool {
				snap, _, err := web.Snapshot(ctx, next)
				return err == nil && snap.State == progress.StateSuccess
			}, "a task enqueued after the loss runs to SUCCESS")
			select {
			case <-started:
				assert.Fail(t, "the vanished task ran again")
			default:
			}
		})
	}
}

// nothingLeased reports whether the default queue of prefix has no entry
// leased and not released: none in its consumer group's pending list, or
// no group at all (Redis lost it, and no fetch has made it again yet).
func nothingLeased(t *testing.T, srv *redistest.Server, prefix string) bool {
	t.Helper()
	pending, err := srv.Do("XPENDING", prefix+":{q:default}:stream", "workers").ToArray()
	if err != nil && strings.HasPrefix(err.Error(), "NOGROUP") {
		return true
	}
	require.NoError(t, err)
	n, err := pending[0].AsInt64()
	require.NoError(t, err)
	return n == 0
}

// TestAppendOnAReplicaIsRefusedNotNotFound: an Append that reaches a
// read-only replica lacking the task (a former primary rejoining after a
// failover, reached by a client that has not yet followed the failover)
// fails without saying that the task is gone: a worker stops and drops
// the run of a task that Append reports gone, and the drop, reaching the
// new primary, would lose a live task.
func TestAppendOnAReplicaIsRefusedNotNotFound(t *testing.T) {
	t.Parallel()
	replica := redistest.StartReplica(t, redistest.Start(t), redistest.Options{})
	b := newBackend(t, newClient(t, replica), redisbackend.Config{})
	id := newTask().ID
	_, err := b.Append(context.Background(), id, progress.LogEvent("on the replica"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, progress.ErrNotFound, "the replica does not have the task, the primary may")
	assert.ErrorContains(t, err, "READONLY")
	assert.ErrorIs(t, err, progress.ErrNotSent, "refused unrun: a reporter sends it again, to the primary its client finds")
	assert.ErrorIs(t, err, queue.ErrUnavailable)
}

// TestLeaseScriptsOnAReplicaAreRefused: every script a worker runs on a
// lease, sent to a read-only replica that lacks the task (a former
// primary rejoining after a failover, which a client that has not yet
// followed the failover still reaches), is refused (READONLY) before it
// runs. Without that, the replica answered from what it lacks: "task not
// found" to the end of a task (after which the worker acknowledged the
// task, and once its client had switched, the acknowledgement deleted the
// live task's entry on the new primary: the task never ended), and "lease
// lost" to an extension, an acknowledgement, a retry or a burial (after
// which the worker dropped a run it still held).
func TestLeaseScriptsOnAReplicaAreRefused(t *testing.T) {
	t.Parallel()
	replica := redistest.StartReplica(t, redistest.Start(t), redistest.Options{})
	b := newBackend(t, newClient(t, replica), redisbackend.Config{})
	ctx := context.Background()
	lease := func() *queue.Lease {
		return &queue.Lease{Task: newTask(), Token: "1-0/1", Deadline: time.Now().Add(time.Minute)}
	}
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"AppendAndAck", func() error {
			_, _, err := b.AppendAndAck(ctx, lease(), progress.Event{Type: progress.EventState, State: progress.StateSuccess})
			return err
		}},
		{"Ack", func() error { return b.Ack(ctx, lease()) }},
		{"Extend", func() error { return b.Extend(ctx, lease(), time.Minute) }},
		{"Retry", func() error { return b.Retry(ctx, lease(), time.Now(), queue.EndStoreDown) }},
		{"Retry later", func() error { return b.Retry(ctx, lease(), time.Now().Add(time.Minute), "") }},
		{"Bury", func() error { return b.Bury(ctx, lease(), "failed") }},
		{"SaveCheckpoint", func() error {
			return b.SaveCheckpoint(ctx, newTask().ID, progress.Checkpoint{Key: "step", Attempt: 1, Output: []byte(`{}`)})
		}},
		{"Fetch", func() error { _, err := b.Fetch(ctx, "w", 1, time.Minute); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			require.Error(t, err)
			assert.NotErrorIs(t, err, progress.ErrNotFound, "the replica does not have the task, the primary may")
			assert.NotErrorIs(t, err, queue.ErrLeaseLost, "the replica does not have the lease, the primary may")
			assert.ErrorContains(t, err, "READONLY")
			assert.ErrorIs(t, err, queue.ErrUnavailable, "refused unrun while the client follows a failover")
		})
	}
}
