package redisbackend_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

func TestDeadLettersExpire(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const retention = 300 * time.Millisecond
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Retention: retention})
	ctx := context.Background()

	old := leaseOne(t, b)
	require.NoError(t, b.Bury(ctx, old, "first"))
	dead, err := b.Dead(ctx, 0)
	require.NoError(t, err)
	require.Len(t, dead, 1, "listed right after Bury")

	time.Sleep(retention + 50*time.Millisecond)
	dead, err = b.Dead(ctx, 0)
	require.NoError(t, err)
	assert.Empty(t, dead, "an entry older than the retention is not listed")
	assert.ErrorIs(t, b.Requeue(ctx, old.Task.ID, newTask()), queue.ErrNotDead, "nor re-queued")
	for _, key := range []string{"dead", "buried"} {
		exists, err := srv.Do("EXISTS", b.Prefix()+":{q:default}:"+key).AsInt64()
		require.NoError(t, err)
		assert.Zero(t, exists, "%s: the set is gone a retention after the last Bury", key)
	}

	// A later Bury prunes what is left of older entries.
	stale := leaseOne(t, b)
	require.NoError(t, b.Bury(ctx, stale, "stale"))
	require.NoError(t, srv.Do("ZADD", b.Prefix()+":{q:default}:dead", "1", "ancient").Error())
	require.NoError(t, srv.Do("HSET", b.Prefix()+":{q:default}:buried", "ancient", "{}").Error())
	fresh := leaseOne(t, b)
	require.NoError(t, b.Bury(ctx, fresh, "fresh"))
	members, err := srv.Do("ZRANGE", b.Prefix()+":{q:default}:dead", "0", "-1").AsStrSlice()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{stale.Task.ID, fresh.Task.ID}, members)
	n, err := srv.Do("HLEN", b.Prefix()+":{q:default}:buried").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(2), n, "the pruned entry's details are gone too")
}

func TestRetire(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	stream := b.Prefix() + ":{q:default}:stream"
	consumers := func() []string {
		t.Helper()
		res, err := srv.Do("XINFO", "CONSUMERS", stream, "workers").ToArray()
		require.NoError(t, err)
		var names []string
		for _, c := range res {
			fields, err := c.AsStrMap()
			require.NoError(t, err)
			names = append(names, fields["name"])
		}
		return names
	}
	fetchAs := func(worker string) *queue.Lease {
		t.Helper()
		task := newTask()
		require.NoError(t, b.Enqueue(ctx, task))
		leases, err := b.Fetch(ctx, worker, 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		return leases[0]
	}

	require.NoError(t, b.Retire(ctx, "nobody"), "no stream yet")
	require.NoError(t, b.Ack(ctx, fetchAs("done")))
	holding := fetchAs("holding")
	require.NoError(t, b.Ack(ctx, fetchAs("live")))
	require.ElementsMatch(t, []string{"done", "holding", "live"}, consumers())

	require.NoError(t, b.Retire(ctx, "done"))
	assert.ElementsMatch(t, []string{"holding", "live"}, consumers(), "the retiring worker's consumer is deleted")
	require.NoError(t, b.Retire(ctx, "holding"))
	assert.ElementsMatch(t, []string{"holding", "live"}, consumers(),
		"a consumer that still holds an entry is kept, so the entry can be taken over")

	defer redisbackend.SetRetireIdle(0)()
	// Redis counts idle time in whole milliseconds, and Retire deletes a
	// consumer idle for longer than the bound: one that acted in this
	// millisecond is idle 0, not longer than 0.
	time.Sleep(2 * time.Millisecond)
	require.NoError(t, b.Retire(ctx, "other"))
	assert.Equal(t, []string{"holding"}, consumers(), "idle consumers that hold nothing are deleted")
	require.NoError(t, b.Ack(ctx, holding), "the held lease is still good")
	require.NoError(t, b.Ack(ctx, fetchAs("live")), "a deleted consumer comes back on its next Fetch")
}
