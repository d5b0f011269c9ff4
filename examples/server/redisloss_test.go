package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
)

// TestRedisRestartedEmpty restarts Redis without its data (no AOF, no
// RDB) under a running system: a web process, a worker process, running
// and pending tasks, and an EventSource client on each. The processes
// must keep running and reconnect; the worker stops the runs of the
// vanished tasks; the stream of every vanished task ends
// with a 404 "task not found" when its client reconnects (no hang, no
// 500); GET of a vanished task is 404; the processes do not spin on Redis
// (their command rate when idle stays near what it was before); and tasks
// started afterwards run to SUCCESS.
func TestRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	const (
		running   = 4
		pending   = 4
		waitLimit = 2 * time.Minute
	)
	srv := redistest.Start(t)
	q := newProcessQueue(t, srv)
	worker := q.startWorker(t, srv, running)
	web := q.startWeb(t, srv, freeAddr(t))
	idleBefore := commandsPerSecond(t, srv)

	ids := make([]string, running+pending)
	for i := range ids {
		ids[i] = startTask(t, http.DefaultClient, web.url(), `{"flow": "poem_flow"}`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	results := make([]followed, len(ids))
	seen := make([]chan struct{}, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		seen[i] = make(chan struct{})
		wg.Go(func() {
			var once sync.Once
			results[i] = eventSource(ctx, web.url(), id, func(string) { once.Do(func() { close(seen[i]) }) })
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range ids {
		select {
		case <-seen[i]:
		case <-ctx.Done():
			require.FailNow(t, "a client saw nothing of its task", "task %s", ids[i])
		}
	}
	waitFor(t, ctx, func() bool {
		n := 0
		for _, id := range ids {
			st := q.state(t, id)
			require.False(t, st.Terminal(), "task %s ended before Redis lost it: the test needs longer flows", id)
			if st == progress.StateProgress {
				n++
			}
		}
		return n == running
	}, "the worker runs its share of the tasks")

	srv.Kill()
	srv.Restart() // without persistence: every key is gone

	wg.Wait()
	require.NoError(t, ctx.Err(), "the streams of the vanished tasks did not end within %v", waitLimit)
	for i, f := range results {
		assert.Equal(t, http.StatusNotFound, f.End, "stream of vanished task %s: %s", ids[i], f)
		assert.Contains(t, f.EndBody, "task not found", "stream of vanished task %s", ids[i])
		assert.NotContains(t, f.Answers, http.StatusInternalServerError, "stream of vanished task %s: %s", ids[i], f)
	}

	// The worker stopped the runs of the vanished tasks at their next
	// report instead of running the flows to their end for nobody.
	waitFor(t, ctx, func() bool {
		return strings.Count(worker.log(), "the task's progress record is gone") == running
	}, "the worker stops the run of every vanished task it ran")

	// New tasks run to SUCCESS on the same processes.
	fresh := make([]string, 3)
	for i := range fresh {
		fresh[i] = startTask(t, http.DefaultClient, web.url(), `{"flow": "poem_flow"}`)
	}
	for _, id := range fresh {
		f := eventSource(ctx, web.url(), id, nil)
		assert.Equal(t, http.StatusOK, f.End, "task %s started after the restart: %s", id, f)
		assert.Equal(t, progress.StateSuccess, f.Last.State, "task %s started after the restart: %s", id, f)
	}

	// The vanished tasks stay gone: nothing their stopped runs did
	// brought a record back.
	for _, id := range ids {
		resp, err := http.Get(web.url() + "/tasks/" + id + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "GET of vanished task %s", id)
	}

	// Idle again: the processes must not be retrying anything in a loop.
	idleAfter := commandsPerSecond(t, srv)
	t.Logf("Redis commands per second with the system idle: %.1f before Redis lost its data, %.1f after", idleBefore, idleAfter)
	assert.LessOrEqual(t, idleAfter, 2*idleBefore+10, "the processes spin on Redis after it lost its data")

	require.True(t, worker.running(), "the worker process exited:\n%s", worker.logTail(20))
	require.True(t, web.running(), "the web process exited:\n%s", web.logTail(20))
	assert.Equal(t, 0, web.terminate(30*time.Second), "exit status of the web process")
	assert.Equal(t, 0, worker.terminate(30*time.Second), "exit status of the worker process")
}

// commandsPerSecond measures how many commands Redis processes per second
// over two seconds, the two INFO calls that measure it excluded.
func commandsPerSecond(t *testing.T, srv *redistest.Server) float64 {
	t.Helper()
	const window = 2 * time.Second
	before := totalCommands(t, srv)
	time.Sleep(window)
	after := totalCommands(t, srv)
	return float64(after-before-1) / window.Seconds()
}

// totalCommands returns Redis's total_commands_processed.
func totalCommands(t *testing.T, srv *redistest.Server) int64 {
	t.Helper()
	info, err := srv.Do("INFO", "stats").ToString()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	require.FailNow(t, "INFO stats has no total_commands_processed")
	return 0
}
