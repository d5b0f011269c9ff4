package redisbackend_test

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

func TestNew(t *testing.T) {
	t.Parallel()
	_, err := redisbackend.New(nil, redisbackend.Config{})
	assert.Error(t, err, "nil client")

	client := newClient(t, redistest.Start(t))
	for _, cfg := range []redisbackend.Config{{Prefix: "a{b"}, {Queue: "q}"}} {
		_, err := redisbackend.New(client, cfg)
		assert.Error(t, err, "%+v breaks hash tags", cfg)
	}
	// A negative delay or duration is refused, and the error names the
	// field.
	for field, cfg := range map[string]redisbackend.Config{
		"FetchDelay":   {FetchDelay: -time.Millisecond},
		"EnqueueDelay": {EnqueueDelay: -time.Millisecond},
		"AckDelay":     {AckDelay: -time.Millisecond},
		"Retention":    {Retention: -time.Hour},
		"PollInterval": {PollInterval: -time.Second},
		"OpTimeout":    {OpTimeout: -time.Second},
		"WaitTimeout":  {WaitTimeout: -time.Second},
	} {
		_, err := redisbackend.New(client, cfg)
		if assert.Error(t, err, field) {
			assert.Contains(t, err.Error(), field)
		}
	}

	b, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	assert.Equal(t, redisbackend.DefaultPrefix, b.Prefix())
	assert.Equal(t, redisbackend.DefaultQueue, b.Queue())
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "Close twice")
}

func TestCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	client := newClient(t, redistest.Start(t))
	b, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	ctx := t.Context()
	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	events, err := b.Subscribe(ctx, task.ID, "")
	require.NoError(t, err)
	cancels, err := b.Cancellations(ctx)
	require.NoError(t, err)

	require.NoError(t, b.Close())
	assert.Empty(t, collect(t, events), "subscription closed by Close")
	_, open := <-cancels
	assert.False(t, open, "cancellation listener closed by Close")

	_, err = b.Subscribe(ctx, task.ID, "")
	assert.ErrorIs(t, err, redisbackend.ErrClosed)
	_, err = b.Cancellations(ctx)
	assert.ErrorIs(t, err, redisbackend.ErrClosed)
	_, err = b.Append(ctx, task.ID, progress.LogEvent("the store still works"))
	assert.NoError(t, err)
}

// TestLargestDurations: the largest durations a Config takes, as a user
// who means "no bound" may give, keep that meaning: adding a blocking
// wait to OpTimeout, or a task's wait to Retention, does not overflow
// into a deadline in the past (every call timing out at once) or a
// negative time to live (the task's keys deleted as they are written).
func TestLargestDurations(t *testing.T) {
	t.Parallel()
	huge := time.Duration(math.MaxInt64)
	client := newClient(t, redistest.Start(t))
	b := newBackend(t, client, redisbackend.Config{OpTimeout: huge, Retention: huge, PollInterval: huge})
	ctx := context.Background()
	// A nil store: one step, the task's record and its queueing in one
	// script.
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
	id, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	task := &queue.Task{ID: id}
	got, err := b.Get(ctx, task.ID)
	require.NoError(t, err, "the delayed task is kept")
	assert.Equal(t, task.ID, got.ID)
	ttl, err := client.Do(ctx, client.B().Pttl().Key(b.Prefix()+":{"+task.ID+"}:task").Build()).AsInt64()
	require.NoError(t, err)
	assert.Greater(t, ttl, (100 * 365 * 24 * time.Hour).Milliseconds(), "the task's record lives as long as Retention says")

	// A Fetch that finds the queue empty waits (OpTimeout on top of its
	// block) until its context ends, and then one takes a task that came.
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	leases, err := b.Fetch(fctx, "w", 1, time.Minute)
	require.ErrorIs(t, err, context.DeadlineExceeded, "an empty queue under the largest OpTimeout")
	require.Empty(t, leases)
	ready := &queue.Task{ID: queue.NewID(), Flow: "f", Inputs: json.RawMessage(`{}`), MaxAttempts: 3, Timeout: time.Minute, EnqueuedAt: time.Now().UTC()}
	require.NoError(t, b.Create(ctx, ready.ID))
	require.NoError(t, b.Enqueue(ctx, ready))
	leases, err = b.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, ready.ID, leases[0].Task.ID)
	require.NoError(t, b.Ack(ctx, leases[0]))
}
