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

// TestNoRunCostsNoRoundTrip checks that a lease that did not run its
// flow (queue.Lease.NoRun) is counted in the round trip its Ack, Bury or
// Retry already takes, on a single Redis and through a Cluster client;
// that a Redis that lost the script (a restart) still counts it, at the
// cost of one round trip more; and that on a Cluster client a lease lost
// before a fetch took the task over has its count taken back with its
// hook retry.
func TestNoRunCostsNoRoundTrip(t *testing.T) {
	t.Parallel()
	inBothModesCounted(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, cluster bool, trips tripCounter) {
		ctx := context.Background()
		runTask(ctx, t, b) // loads the scripts
		warm := leaseOne(t, b)
		warm.NoRun = true
		require.NoError(t, b.Bury(ctx, warm, "warm-up"))
		warm = leaseOne(t, b)
		require.NoError(t, b.Retry(ctx, warm, time.Now().Add(time.Hour), queue.EndHooksPending))
		noRuns := func(id string) int {
			t.Helper()
			got, err := b.Get(ctx, id)
			require.NoError(t, err)
			return got.NoRuns
		}

		for _, op := range []struct {
			name  string
			end   func(l *queue.Lease) error
			trips int64
		}{
			{"Ack", func(l *queue.Lease) error { return b.Ack(ctx, l) }, 1},
			{"Bury", func(l *queue.Lease) error { return b.Bury(ctx, l, "gave up") }, 1},
			{"Retry for the hooks", func(l *queue.Lease) error {
				return b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndHooksPending)
			}, map[bool]int64{false: 1, true: 2}[cluster]},
		} {
			ran := leaseOne(t, b)
			n, err := trips(func() error { return op.end(ran) })
			require.NoError(t, err)
			assert.Equal(t, op.trips, n, "%s of a lease that ran the flow", op.name)
			assert.Zero(t, noRuns(ran.Task.ID), op.name)

			l := leaseOne(t, b)
			l.NoRun = true
			n, err = trips(func() error { return op.end(l) })
			require.NoError(t, err)
			assert.Equal(t, op.trips, n, "%s of a lease that did not", op.name)
			assert.Equal(t, 1, noRuns(l.Task.ID), op.name)
		}

		// Redis forgets its scripts: the count costs one round trip
		// more (the script sent whole), and is not lost.
		l := leaseOne(t, b)
		l.NoRun = true
		require.NoError(t, srv.Do("SCRIPT", "FLUSH").Error())
		n, err := trips(func() error { return b.Ack(ctx, l) })
		require.NoError(t, err)
		assert.Equal(t, int64(3), n, "the ack script and the count sent again")
		assert.Equal(t, 1, noRuns(l.Task.ID), "after SCRIPT FLUSH")

		// A worker found dead (its lease marked lost, see
		// lib/reclaim.lua) gives its task back for the hooks before a
		// fetch has taken it over: nothing is counted in the end.
		l = leaseOne(t, b)
		l.NoRun = true
		markLost(t, srv, b, l, "")
		require.ErrorIs(t, b.Retry(ctx, l, time.Now(), queue.EndHooksPending), queue.ErrLeaseLost)
		got, err := b.Get(ctx, l.Task.ID)
		require.NoError(t, err)
		assert.Zero(t, got.NoRuns, "a lost lease's count")
		assert.Zero(t, got.HookRetries, "a lost lease's hook retry")
	})
}
