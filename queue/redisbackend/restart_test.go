package redisbackend_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// appendRetrying appends e, retrying while Redis cannot be reached (the
// client reconnects on its own).
func appendRetrying(ctx context.Context, t *testing.T, b *redisbackend.Backend, taskID string, e progress.Event) {
	t.Helper()
	for {
		_, err := b.Append(ctx, taskID, e)
		if err == nil {
			return
		}
		require.ErrorIs(t, err, queue.ErrUnavailable, "the only failure expected is an unreachable Redis")
		require.NoError(t, ctx.Err(), "Redis did not come back")
		time.Sleep(20 * time.Millisecond)
	}
}

// eventsRetrying reads the events of a task, retrying while Redis does
// not answer: just after a restart, or when a loaded machine holds up an
// fsync of its append-only file past OpTimeout.
func eventsRetrying(ctx context.Context, t *testing.T, b *redisbackend.Backend, taskID string) []progress.Event {
	t.Helper()
	for {
		events, err := b.Events(ctx, taskID, "")
		if err == nil {
			return events
		}
		require.ErrorIs(t, err, queue.ErrUnavailable, "the only failure expected is an unreachable Redis")
		require.NoError(t, ctx.Err(), "Redis did not answer")
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRestartMidStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fsync string
		stop  func(*redistest.Server)
	}{
		{"graceful stop, fsync everysec", "everysec", (*redistest.Server).Stop},
		{"crash, fsync always", "always", (*redistest.Server).Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: tc.fsync})
			b := newBackend(t, newClient(t, srv), redisbackend.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()

			task := newTask()
			require.NoError(t, b.Create(ctx, task.ID))
			if tc.fsync == "everysec" {
				// Let the creation reach the disk before anything else.
				time.Sleep(1100 * time.Millisecond)
			}
			watchers := make([]<-chan progress.Event, 3)
			for i := range watchers {
				var err error
				watchers[i], err = b.Subscribe(ctx, task.ID, "")
				require.NoError(t, err)
			}
			const before, during, after = 5, 3, 5
			for i := range before {
				appendRetrying(ctx, t, b, task.ID, progress.LogEvent(fmt.Sprintf("before %d", i)))
			}
			for _, w := range watchers {
				collectN(t, w, before) // delivered live, before the restart
			}

			tc.stop(srv)
			_, err := b.Append(ctx, task.ID, progress.LogEvent("while down"))
			assert.ErrorIs(t, err, queue.ErrUnavailable, "Append while Redis is down")
			srv.Restart()

			// Appended as soon as Redis is back, maybe before the pub/sub
			// connection is: watchers read these from the stream.
			for i := range during {
				appendRetrying(ctx, t, b, task.ID, progress.LogEvent(fmt.Sprintf("during %d", i)))
			}
			// Appended later, when the pub/sub connection is surely back:
			// delivered live.
			eventually(t, func() bool { return len(subscribedClients(t, srv)) == 1 }, "pub/sub connection restored")
			for i := range after {
				appendRetrying(ctx, t, b, task.ID, progress.LogEvent(fmt.Sprintf("after %d", i)))
			}
			appendRetrying(ctx, t, b, task.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: []byte(`"ok"`)})

			events, err := b.Events(ctx, task.ID, "")
			require.NoError(t, err)
			require.Len(t, events, before+during+after+1, "nothing acknowledged was lost by the restart")
			for i, w := range watchers {
				rest := collect(t, w)
				assert.Equal(t, ids(events[before:]), ids(rest), "watcher %d: every event once, in order, across the restart", i)
			}
		})
	}
}

// operation is one call of the Backend, made with ctx.
type operation struct {
	name string
	op   func(ctx context.Context) error
}

// operations lists a call of every Backend method that reaches Redis,
// on a task that runs under held and on a task that is new.
func operations(b *redisbackend.Backend, held *queue.Lease) []operation {
	running, task := held.Task, newTask()
	return []operation{
		{"Create", func(ctx context.Context) error { return b.Create(ctx, task.ID) }},
		{"Append", func(ctx context.Context) error {
			_, err := b.Append(ctx, running.ID, progress.LogEvent("x"))
			return err
		}},
		{"Snapshot", func(ctx context.Context) error { _, _, err := b.Snapshot(ctx, running.ID); return err }},
		{"Enqueue", func(ctx context.Context) error { return b.Enqueue(ctx, task) }},
		{"CreateAndEnqueue", func(ctx context.Context) error { return b.CreateAndEnqueue(ctx, task) }},
		{"Fetch", func(ctx context.Context) error { _, err := b.Fetch(ctx, "w", 1, time.Minute); return err }},
		{"Extend", func(ctx context.Context) error { return b.Extend(ctx, held, time.Minute) }},
		{"Ack", func(ctx context.Context) error { return b.Ack(ctx, held) }},
		{"Bury", func(ctx context.Context) error { return b.Bury(ctx, held, "boom") }},
		{"Retry", func(ctx context.Context) error { return b.Retry(ctx, held, time.Now(), queue.EndFailed) }},
		{"Cancel", func(ctx context.Context) error { return b.Cancel(ctx, running.ID) }},
		{"Dead", func(ctx context.Context) error { _, err := b.Dead(ctx, 0); return err }},
		{"Requeue", func(ctx context.Context) error { return b.Requeue(ctx, running.ID, task) }},
		{"Retire", func(ctx context.Context) error { return b.Retire(ctx, "w") }},
		// Read-only commands are retried by rueidis until their context
		// ends: Config.OpTimeout bounds them.
		{"Get", func(ctx context.Context) error { _, err := b.Get(ctx, running.ID); return err }},
		{"Events", func(ctx context.Context) error { _, err := b.Events(ctx, running.ID, ""); return err }},
		{"Subscribe", func(ctx context.Context) error { _, err := b.Subscribe(ctx, running.ID, ""); return err }},
	}
}

// requireUnavailable runs op with a context that has no deadline and
// checks that it fails with queue.ErrUnavailable rather than hang.
func requireUnavailable(t *testing.T, op func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.ErrorIs(t, err, queue.ErrUnavailable, "error: %v", err)
	case <-time.After(waitLimit):
		require.FailNow(t, "the operation hangs while Redis cannot answer")
	}
}

// leaseOne enqueues a task and leases it.
func leaseOne(t *testing.T, b *redisbackend.Backend) *queue.Lease {
	t.Helper()
	ctx := context.Background()
	running := newTask()
	require.NoError(t, b.Create(ctx, running.ID))
	require.NoError(t, b.Enqueue(ctx, running))
	leases, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{OpTimeout: 300 * time.Millisecond})
	held := leaseOne(t, b)

	srv.Stop()
	for _, tt := range operations(b, held) {
		t.Run(tt.name, func(t *testing.T) { requireUnavailable(t, tt.op) })
	}

	srv.Restart() // without persistence: everything is gone
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	task := newTask()
	eventually(t, func() bool { return b.Create(ctx, task.ID) == nil }, "Create works again once Redis is back")
	require.NoError(t, b.Enqueue(ctx, task))
	got, err := b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err, "Fetch recreates the consumer group")
	require.Len(t, got, 1)
	assert.Equal(t, task.ID, got[0].Task.ID)
}
