//go:build unix

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

// TestFetchKeepsWhatItsLookLeasedAfterItsContextEnds is the deadline
// counterpart of TestFetchCancelledInItsLookKeepsWhatItTook, with no
// client wrapper: a worker's first Fetch (it has no plan, so it looks
// without waiting) sends the fetch script, and its deadline passes
// before the answer comes back (here Redis is frozen meanwhile; on a
// loaded machine the answer is merely late, and rueidis gives up on the
// connection at the deadline). Redis runs the script all the same, and
// leases the task for an hour to that worker. The task must not be lost:
// Fetch returns that lease although its context has ended, or else, if
// the script never went out, the task is still there for the next Fetch.
// A Fetch that dropped the answer left the task leased to a worker that
// never heard of it until its lease passed: the conformance cases that
// fetch with a 20 ms context (judgeUntilTaken) then never got back the
// task taken back from a dead worker.
func TestFetchKeepsWhatItsLookLeasedAfterItsContextEnds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	// Another worker's Fetch loads the script, so that the look below is
	// one EVALSHA, which a frozen Redis runs once it resumes.
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "other", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 1)
	task := newTask()
	require.NoError(t, b.Enqueue(ctx, task))

	resume := freeze(t, srv)
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	type result struct {
		leases []*queue.Lease
		err    error
	}
	done := make(chan result, 1)
	go func() {
		leases, err := b.Fetch(fctx, "w", 1, time.Hour)
		done <- result{leases, err}
	}()
	<-fctx.Done()
	// A Fetch that gives up on the answer returns now, while Redis is
	// still frozen; one that waits for it returns once Redis resumes.
	// The bound only gives the first kind the time to show itself.
	var r result
	select {
	case r = <-done:
		resume()
	case <-time.After(time.Second):
		resume()
		r = <-done
	}

	if r.err != nil {
		// Only a Fetch that sent nothing may return its context's
		// error: the task is still ready.
		require.ErrorIs(t, r.err, context.DeadlineExceeded)
		assert.Empty(t, r.leases)
		gctx, gcancel := context.WithTimeout(ctx, waitLimit)
		defer gcancel()
		next, err := b.Fetch(gctx, "next", 1, time.Minute)
		require.NoError(t, err, "the task is held by a Fetch that returned no lease")
		require.Len(t, next, 1)
		assert.Equal(t, task.ID, next[0].Task.ID)
		return
	}
	require.Len(t, r.leases, 1, "what the look leased")
	assert.Equal(t, task.ID, r.leases[0].Task.ID)
	require.NoError(t, b.Ack(ctx, r.leases[0]), "the lease is the caller's")
}
