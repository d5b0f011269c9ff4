package main

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestKilledWorkersLoseNoTask runs tasks of 50-500 ms on three worker
// processes and kills one of them with SIGKILL at random moments, starting
// a replacement each time. Every task must end SUCCESS exactly once; the
// test reports how many ran more than once.
func TestKilledWorkersLoseNoTask(t *testing.T) {
	t.Parallel()
	n, kills := 1000, 5
	if testing.Short() {
		n, kills = 200, 3
	}
	const (
		processes = 3
		lease     = 2 * time.Second
		// workload is about how long the workers would take without
		// kills: long enough for the kills to land while tasks run.
		workload = 5 * time.Second
		limit    = 90 * time.Second
	)
	// Concurrency per process so that the n tasks (275 ms on average)
	// keep the workers busy for about workload.
	concurrency := max(2, int(time.Duration(n)*275*time.Millisecond/(processes*workload)))

	rng := seededRand(t)

	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	ids := q.enqueueSleeps(t, randomSleeps(rng, n, 50, 500))

	args := q.workerArgs("-concurrency", strconv.Itoa(concurrency), "-lease", lease.String(), "-grace", "10s")
	start := time.Now()
	workers := make([]*workerProcess, processes)
	for i := range workers {
		workers[i] = startWorker(t, srv.URL(), args...)
	}
	killed := 0
	nextKill := time.Now().Add(randomPause(rng))
	q.waitFinished(t, ids, limit, func(int) {
		if killed == kills || time.Now().Before(nextKill) {
			return
		}
		i := rng.IntN(processes)
		workers[i].kill()
		killed++
		workers[i] = startWorker(t, srv.URL(), args...)
		nextKill = time.Now().Add(randomPause(rng))
	})
	elapsed := time.Since(start)

	for _, w := range workers {
		assert.Equal(t, 0, w.terminate(30*time.Second), "exit status of worker %d after SIGTERM", w.pid())
	}
	leasedAgain, ranAgain, maxStarts := 0, 0, 0
	for _, id := range ids {
		out := q.checkSucceededOnce(t, id)
		if out.Attempt > 1 {
			leasedAgain++
		}
		if out.Starts > 1 {
			ranAgain++
		}
		maxStarts = max(maxStarts, out.Starts)
	}
	t.Logf("%d tasks on %d worker processes (concurrency %d, lease %v): %d killed with SIGKILL, all tasks SUCCESS exactly once in %v; "+
		"%d leased more than once (attempt > 1), %d started their flow more than once (at most %d times)",
		n, processes, concurrency, lease, killed, elapsed.Round(10*time.Millisecond), leasedAgain, ranAgain, maxStarts)
	require.Positive(t, killed, "no worker was killed before the tasks were done")
	assert.Positive(t, leasedAgain, "the killed workers' tasks were not run again")
}

// randomPause is the time between two kills.
func randomPause(rng *rand.Rand) time.Duration {
	return 300*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
}
