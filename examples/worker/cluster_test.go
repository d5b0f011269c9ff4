package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestWorkerProcessesOnCluster runs tasks on three worker processes whose
// REDIS_URL names a Redis Cluster of three masters, kills one of them
// with SIGKILL and starts a replacement, while the queue's slot moves to
// another master (held half moved for a while) and redis-cli moves 500
// more. Every task
// must end SUCCESS exactly once.
func TestWorkerProcessesOnCluster(t *testing.T) {
	t.Parallel()
	const (
		n         = 300
		processes = 3
		lease     = 2 * time.Second
		limit     = 90 * time.Second
	)
	rng := seededRand(t)

	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	q := newTestQueue(t, c)

	args := q.workerArgs("-concurrency", "20", "-lease", lease.String(), "-grace", "10s")
	workers := make([]*workerProcess, processes)
	for i := range workers {
		workers[i] = startWorker(t, c.URL(), args...)
	}
	// The tasks go in once every worker runs: on a loaded machine the
	// first worker could otherwise finish them all while the others
	// start, before any is killed.
	ids := q.enqueueSleeps(t, randomSleeps(rng, n, 50, 300))
	// The queue's slot moves to another master, held half moved for a
	// while, then redis-cli moves 500 more.
	slot, err := c.SlotOf(q.prefix + ":{q:" + q.name + "}:stream")
	require.NoError(t, err)
	from, err := c.Owner(slot)
	require.NoError(t, err)
	masters, err := c.Masters()
	require.NoError(t, err)
	to := masters[0]
	if to.ID == from.ID {
		to = masters[1]
	}
	resharded := make(chan error, 1)
	go func() {
		err := c.MoveSlot(slot, to.ID, func() { time.Sleep(500 * time.Millisecond) })
		if err == nil {
			err = c.Reshard(from.ID, to.ID, 500)
		}
		resharded <- err
	}()

	killed := false
	q.waitFinished(t, ids, limit, func(remaining int) {
		// The first poll that finds some tasks done and some not.
		if !killed && remaining < n {
			i := rng.IntN(processes)
			workers[i].kill()
			workers[i] = startWorker(t, c.URL(), args...)
			killed = true
		}
	})
	require.NoError(t, <-resharded)
	for _, w := range workers {
		assert.Equal(t, 0, w.terminate(30*time.Second), "exit status of worker %d after SIGTERM", w.pid())
	}
	leasedAgain := 0
	for _, id := range ids {
		if q.checkSucceededOnce(t, id).Attempt > 1 {
			leasedAgain++
		}
	}
	owner, err := c.Owner(slot)
	require.NoError(t, err)
	assert.Equal(t, to.ID, owner.ID, "the queue's slot moved")
	t.Logf("%d tasks on %d worker processes on a cluster, one killed, the queue's slot moved: all SUCCESS exactly once; %d leased more than once",
		n, processes, leasedAgain)
	assert.True(t, killed, "no worker was killed before the tasks were done")
}
