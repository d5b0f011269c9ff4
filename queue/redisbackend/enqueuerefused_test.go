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

// splitClient is a client of a single Redis that sends a round trip
// holding an HSET of key in two: the commands before its first XADD,
// then, once between has run, the rest. It stands for a Redis whose used
// memory reaches its maxmemory as it takes the task's record, large
// enough to cross it, when between starts that refusal.
type splitClient struct {
	rueidis.Client
	key     string
	between func()
	once    sync.Once
}

func (c *splitClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	record, at := false, -1
	for i, cmd := range cmds {
		args := cmd.Commands()
		record = record || (args[0] == "HSET" && args[1] == c.key)
		if record && at < 0 && args[0] == "XADD" {
			at = i
		}
	}
	if at < 0 {
		return c.Client.DoMulti(ctx, cmds...)
	}
	split := false
	c.once.Do(func() { split = true })
	if !split {
		return c.Client.DoMulti(ctx, cmds...)
	}
	res := c.Client.DoMulti(ctx, cmds[:at]...)
	c.between()
	return append(res, c.Client.DoMulti(ctx, cmds[at:]...)...)
}

// TestEnqueueEntryRefusedAfterRecord: on a single Redis, Enqueue sends a
// task's record and its queue entry in one round trip, which a Redis
// whose memory runs out in between takes in part: the record, not the
// entry. The record alone would be a task that no worker runs (and that a
// start with the same idempotency key takes for queued): it is taken back,
// and Enqueue's error is a refusal (503, nothing written); once memory is
// freed, the task is enqueued and runs. A task due soon whose delayed-set
// member was taken is queued whatever becomes of the wake-up after it.
func TestEnqueueEntryRefusedAfterRecord(t *testing.T) {
	t.Parallel()
	oom := writeRefusals[0]
	for _, tc := range []struct {
		name   string
		runAt  time.Duration
		queued bool
	}{
		{"entry refused", 0, false},
		{"wake-up refused", 50 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			prefix := uniquePrefix(t)
			task := newTask()
			var end func()
			client := &splitClient{Client: newClient(t, srv), key: prefix + ":{" + task.ID + "}:task", between: func() { end = oom.start(t, srv) }}
			b := newBackend(t, client, redisbackend.Config{Prefix: prefix})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			runTask(ctx, t, b) // the queue exists
			require.NoError(t, b.Create(ctx, task.ID))
			if tc.runAt > 0 {
				task.RunAt = time.Now().Add(tc.runAt)
			}

			err := b.Enqueue(ctx, task)
			require.NotNil(t, end, "the round trip was not split")
			if tc.queued {
				require.NoError(t, err, "the task is queued")
				_, err = b.Get(ctx, task.ID)
				require.NoError(t, err, "its record is kept")
			} else {
				require.Error(t, err)
				assert.ErrorIs(t, err, queue.ErrUnavailable, "start-task answers 503")
				assert.ErrorIs(t, err, progress.ErrNotSent)
				assert.ErrorContains(t, err, oom.advice)
				_, err = b.Get(ctx, task.ID)
				require.ErrorIs(t, err, queue.ErrNotFound, "the record is taken back")
			}
			end()
			if !tc.queued {
				require.NoError(t, b.Enqueue(ctx, task), "enqueued again once memory is freed")
			}
			var leases []*queue.Lease
			eventually(t, func() bool {
				leases, err = b.Fetch(ctx, "w", 1, time.Minute)
				require.NoError(t, err)
				return len(leases) == 1
			}, "the task is not leased")
			assert.Equal(t, task.ID, leases[0].Task.ID)
			assert.Equal(t, 1, leases[0].Task.Attempt)
		})
	}
}
