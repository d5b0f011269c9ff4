package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestWorkerProcessesAcrossSentinelFailover runs tasks on two worker
// processes in durable mode (-wait-replicas 1) whose REDIS_URL names
// three sentinels and a master set, and kills the primary with SIGKILL
// while they run: the sentinels promote the replica, the old primary comes
// back as its replica, and the workers go on with the new primary by
// themselves. Every task must end SUCCESS exactly once.
func TestWorkerProcessesAcrossSentinelFailover(t *testing.T) {
	t.Parallel()
	const (
		n     = 200
		lease = 2 * time.Second
		limit = 90 * time.Second
	)
	rng := seededRand(t)

	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	q := newTestQueue(t, s)
	ids := q.enqueueSleeps(t, randomSleeps(rng, n, 50, 300))
	args := q.workerArgs("-concurrency", "10", "-lease", lease.String(), "-grace", "10s", "-wait-replicas", "1")
	workers := []*workerProcess{startWorker(t, s.URL(), args...), startWorker(t, s.URL(), args...)}

	old, err := s.Primary()
	require.NoError(t, err)
	failedOver := make(chan error, 1)
	killed := false
	var killedAt time.Time
	q.waitFinished(t, ids, limit, func(remaining int) {
		if !killed && remaining < n*2/3 {
			killed, killedAt = true, time.Now()
			old.Kill()
			go func() {
				_, err := s.WaitFailover(old)
				if err == nil {
					err = s.Rejoin(old)
				}
				failedOver <- err
			}()
		}
	})
	require.True(t, killed, "the primary was not killed before the tasks were done")
	require.NoError(t, <-failedOver)
	elapsed := time.Since(killedAt)
	for _, w := range workers {
		assert.Equal(t, 0, w.terminate(30*time.Second), "exit status of worker %d after SIGTERM", w.pid())
	}
	leasedAgain := 0
	for _, id := range ids {
		if q.checkSucceededOnce(t, id).Attempt > 1 {
			leasedAgain++
		}
	}
	t.Logf("%d tasks on 2 worker processes through Sentinel, the primary killed: all SUCCESS exactly once, the last %v after the kill; %d leased more than once",
		n, elapsed.Round(10*time.Millisecond), leasedAgain)
}
