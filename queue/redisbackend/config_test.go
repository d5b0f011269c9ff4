package redisbackend_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
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
