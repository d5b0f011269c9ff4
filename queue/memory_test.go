package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/queuetest"
	"github.com/flowsrun/flows/registry"
)

func TestMemoryConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) (queue.Backend, progress.Backend) {
		return queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	})
}

func memTask() *queue.Task {
	return &queue.Task{ID: queue.NewID(), Flow: "f", Inputs: json.RawMessage(`{"k":"v"}`), MaxAttempts: 3}
}

func TestMemoryRetention(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{Retention: 20 * time.Millisecond})
	done, waiting := memTask(), memTask()
	require.NoError(t, m.Enqueue(ctx, done))
	require.NoError(t, m.Enqueue(ctx, waiting))
	leases, err := m.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, m.Ack(ctx, leases[0]))

	_, err = m.Get(ctx, done.ID)
	require.NoError(t, err, "readable right after Ack")
	require.Eventually(t, func() bool {
		_, err := m.Get(ctx, done.ID)
		return err != nil
	}, waitLong, time.Millisecond, "the finished task is dropped after the retention")
	_, err = m.Get(ctx, done.ID)
	assert.ErrorIs(t, err, queue.ErrNotFound)
	assert.ErrorIs(t, m.Cancel(ctx, done.ID), queue.ErrNotFound)

	_, err = m.Get(ctx, waiting.ID)
	assert.NoError(t, err, "a task not yet finished is kept whatever its age")
}

func TestMemoryDeadLettersExpire(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{Retention: 20 * time.Millisecond})
	task := memTask()
	require.NoError(t, m.Enqueue(ctx, task))
	leases, err := m.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, m.Bury(ctx, leases[0], "boom"))
	dead, err := m.Dead(ctx, 0)
	require.NoError(t, err)
	require.Len(t, dead, 1, "listed right after Bury")

	require.Eventually(t, func() bool {
		dead, err := m.Dead(ctx, 0)
		require.NoError(t, err)
		return len(dead) == 0
	}, waitLong, time.Millisecond, "the dead task leaves the set after the retention")
	_, err = m.Get(ctx, task.ID)
	assert.ErrorIs(t, err, queue.ErrNotFound)
	assert.ErrorIs(t, m.Requeue(ctx, task.ID, memTask()), queue.ErrNotDead)
}

func TestMemorySlowListenerLosesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := queue.NewMemory(queue.MemoryConfig{})
	slow, err := m.Cancellations(ctx)
	require.NoError(t, err)
	fast, err := m.Cancellations(ctx)
	require.NoError(t, err)

	const n = 500
	ids := make([]string, n)
	for i := range ids {
		task := memTask()
		require.NoError(t, m.Enqueue(ctx, task))
		ids[i] = task.ID
	}
	fastGot := make(chan []string)
	go func() {
		var got []string
		for id := range fast {
			got = append(got, id)
			if len(got) == n {
				break
			}
		}
		fastGot <- got
	}()
	for _, id := range ids {
		require.NoError(t, m.Cancel(ctx, id), "Cancel does not wait for a listener that is not reading")
	}
	select {
	case got := <-fastGot:
		assert.Equal(t, ids, got, "a reading listener is not held up by one that is not")
	case <-time.After(waitLong):
		require.FailNow(t, "fast listener starved")
	}

	var got []string
	for len(got) < n {
		select {
		case id := <-slow:
			got = append(got, id)
		case <-time.After(waitLong):
			require.FailNow(t, "cancellations lost", "got %d of %d", len(got), n)
		}
	}
	assert.Equal(t, ids, got, "every id, in order")
}

func TestMemoryRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{})
	task := memTask()
	require.NoError(t, m.Enqueue(ctx, task))

	assert.Error(t, m.Enqueue(ctx, task), "duplicate id")
	assert.ErrorIs(t, m.Enqueue(ctx, &queue.Task{ID: "no/slashes"}), queue.ErrInvalidID)
	assert.ErrorIs(t, m.Enqueue(ctx, nil), queue.ErrInvalidID)

	for _, tc := range []struct {
		max   int
		lease time.Duration
	}{{0, time.Minute}, {-1, time.Minute}, {1, 0}, {1, -time.Second}} {
		t.Run(fmt.Sprintf("fetch max %d lease %s", tc.max, tc.lease), func(t *testing.T) {
			leases, err := m.Fetch(ctx, "w", tc.max, tc.lease)
			assert.Error(t, err)
			assert.Empty(t, leases)
		})
	}
	leases, err := m.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err, "the refused fetches leased nothing")
	require.Len(t, leases, 1)
	assert.Equal(t, 1, leases[0].Task.Attempt)
	assert.Error(t, m.Extend(ctx, leases[0], 0))
	assert.ErrorIs(t, m.Ack(ctx, nil), queue.ErrLeaseLost)
	assert.ErrorIs(t, m.Ack(ctx, &queue.Lease{}), queue.ErrLeaseLost)
}

func TestMemoryKeepsCopies(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{})
	task := memTask()
	require.NoError(t, m.Enqueue(ctx, task))
	task.Inputs[2] = 'X'
	task.Flow = "changed"

	leases, err := m.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	l := leases[0]
	assert.Equal(t, "f", l.Task.Flow)
	assert.JSONEq(t, `{"k":"v"}`, string(l.Task.Inputs))
	l.Task.Inputs[2] = 'Y'
	l.Task.Attempt = 10

	got, err := m.Get(ctx, task.ID)
	require.NoError(t, err)
	assert.JSONEq(t, `{"k":"v"}`, string(got.Inputs))
	assert.Equal(t, 1, got.Attempt)
}

func TestMemoryExtendMovesDeadline(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{})
	require.NoError(t, m.Enqueue(ctx, memTask()))
	leases, err := m.Fetch(ctx, "w", 1, time.Second)
	require.NoError(t, err)
	l := leases[0]
	first := l.Deadline
	require.NoError(t, m.Extend(ctx, l, time.Hour))
	assert.True(t, l.Deadline.After(first.Add(50*time.Minute)), "deadline %v, first %v", l.Deadline, first)
}

func TestMemoryExpiredLeaseGoodUntilReclaimed(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{})
	require.NoError(t, m.Enqueue(ctx, memTask()))
	leases, err := m.Fetch(ctx, "w", 1, time.Millisecond)
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	assert.NoError(t, m.Extend(ctx, leases[0], time.Minute), "no Fetch has reclaimed the task")
	assert.NoError(t, m.Ack(ctx, leases[0]))
}

func TestMemoryEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := queue.NewMemory(queue.MemoryConfig{})
	task := memTask()
	assert.ErrorIs(t, m.Enqueue(ctx, task), context.Canceled)
	require.NoError(t, m.Enqueue(context.Background(), task))
	_, err := m.Fetch(ctx, "w", 1, time.Minute)
	assert.ErrorIs(t, err, context.Canceled, "an ended context leases nothing even when a task is ready")
	_, err = m.Get(ctx, task.ID)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, m.Cancel(ctx, task.ID), context.Canceled)
	ch, err := m.Cancellations(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	}, waitLong, time.Millisecond)
}

// TestMemoryStatsLeaveOutCancelledPending checks that pending tasks
// cancelled while no worker runs are not counted as waiting (Ready,
// OldestReady): they ended, FAILURE, though the backend holds them until
// a worker takes and drops them; nor is a delayed task cancelled (see
// queue.Stats; the Redis backend counts them, see its
// TestStatsCountCancelledWaitingUntilDropped).
func TestMemoryStatsLeaveOutCancelledPending(t *testing.T) {
	ctx := context.Background()
	m := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	reg := registry.New()
	reg.MustRegister("waits", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	b := queue.NewBroker(m, store, queue.BrokerConfig{Registry: reg})
	in := queue.NewInspector(m, store, queue.InspectorConfig{})
	var ids []string
	for range 3 {
		id, err := b.Enqueue(ctx, "waits", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		ids = append(ids, id)
		time.Sleep(3 * time.Millisecond) // the first waits longest
	}
	st, err := in.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), st.Ready, "before the cancellations")
	oldest := st.OldestReady
	require.False(t, oldest.IsZero())

	require.NoError(t, in.Cancel(ctx, ids[0]))
	st, err = in.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), st.Ready, "a cancelled task is not waiting")
	assert.True(t, st.OldestReady.After(oldest), "oldest ready %v, the cancelled task's %v", st.OldestReady, oldest)

	for _, id := range ids[1:] {
		require.NoError(t, in.Cancel(ctx, id))
	}
	st, err = in.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.StateCounts{Failure: 3}, st.Counts)
	assert.Equal(t, int64(0), st.Ready, "cancelled tasks are not waiting")
	assert.True(t, st.OldestReady.IsZero(), "nothing waits: %v", st.OldestReady)
	depth, err := m.Depth(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.Depth{}, depth)

	// A delayed task, cancelled, is made ready to be dropped: it is
	// neither Delayed nor Ready.
	later, err := b.Enqueue(ctx, "waits", json.RawMessage(`{}`), queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	depth, err = m.Depth(ctx)
	require.NoError(t, err)
	require.Equal(t, queue.Depth{Delayed: 1}, depth)
	require.NoError(t, in.Cancel(ctx, later))
	depth, err = m.Depth(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.Depth{}, depth, "a cancelled delayed task waits for nothing")

	// A worker still takes them, to drop them.
	leases, err := m.Fetch(ctx, "w", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 4)
	for _, l := range leases {
		assert.True(t, l.Task.Cancelled, "task %s", l.Task.ID)
	}
}

// TestMemoryRefusesNegativeRetention: a negative Retention can only be a
// mistake; NewMemory panics naming the field, as the Redis backend's New
// fails on one, instead of taking the default.
func TestMemoryRefusesNegativeRetention(t *testing.T) {
	assert.PanicsWithValue(t, "queue: NewMemory: MemoryConfig.Retention -1h0m0s is negative (zero means DefaultRetention)",
		func() { queue.NewMemory(queue.MemoryConfig{Retention: -time.Hour}) })
}
