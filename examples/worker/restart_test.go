package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
)

// TestRedisCrashWithAOF crashes Redis (SIGKILL) while worker processes run
// tasks and a producer keeps enqueueing, then starts it again on its
// append-only file (appendfsync always). Every task whose Enqueue
// succeeded, before, during or after the crash, must end SUCCESS exactly
// once, with the same worker processes still running.
func TestRedisCrashWithAOF(t *testing.T) {
	t.Parallel()
	n := 300
	if testing.Short() {
		n = 100
	}
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	q := newTestQueue(t, srv)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	durations := make([]int, n)
	for i := range durations {
		durations[i] = 50 + rng.IntN(251)
	}
	ids := q.enqueueSleeps(t, durations)

	args := q.workerArgs("-concurrency", "8", "-lease", "2s")
	workers := []*workerProcess{startWorker(t, srv.URL(), args...), startWorker(t, srv.URL(), args...)}

	// The producer enqueues until stopped; what it got a task id for was
	// accepted and must run.
	var (
		mu       sync.Mutex
		accepted []string
		refused  int
	)
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		inputs, _ := json.Marshal(sleepInput{MS: 50})
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			id, err := q.broker.Enqueue(ctx, sleepFlowName, inputs, queue.EnqueueOptions{})
			cancel()
			mu.Lock()
			if err == nil {
				accepted = append(accepted, id)
			} else {
				refused++
			}
			mu.Unlock()
		}
	}()
	stopProducer := sync.OnceFunc(func() {
		close(stop)
		<-produced
	})
	t.Cleanup(stopProducer)

	// Crash Redis once a quarter of the tasks are done.
	deadline := time.Now().Add(60 * time.Second)
	for len(q.unfinished(t, ids)) > 3*n/4 {
		require.True(t, time.Now().Before(deadline), "the workers did not get through a quarter of the tasks")
		time.Sleep(50 * time.Millisecond)
	}
	srv.Kill()
	time.Sleep(300 * time.Millisecond) // let everyone notice
	srv.Restart()
	// Keep producing a little after the restart, then stop.
	mu.Lock()
	before := len(accepted)
	mu.Unlock()
	for {
		mu.Lock()
		after := len(accepted) - before
		mu.Unlock()
		if after >= 20 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no task accepted after the restart")
		time.Sleep(50 * time.Millisecond)
	}
	stopProducer()

	all := append(append([]string(nil), ids...), accepted...)
	q.waitFinished(t, all, 60*time.Second, nil)
	again := 0
	for _, id := range all {
		if q.checkSucceededOnce(t, id).Starts > 1 {
			again++
		}
	}
	for _, w := range workers {
		require.True(t, w.running(), "worker %d exited during the Redis crash:\n%s", w.pid(), w.logTail(20))
		assert.Equal(t, 0, w.terminate(30*time.Second), "exit status of worker %d", w.pid())
	}
	t.Logf("%d tasks enqueued before the crash and %d by the producer (%d refused while Redis was down): all SUCCESS exactly once; %d started more than once",
		n, len(accepted), refused, again)
}
