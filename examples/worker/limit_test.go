package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
)

// limitFlowName is the test-only flow registered with a concurrency limit
// of limitFlowSlots (registry.Concurrency), in the worker processes and in
// the test's Broker alike.
const (
	limitFlowName  = "limited_flow"
	limitFlowSlots = 2
)

// limitInput is the input of limited_flow: its counter's URL and how long
// to run.
type limitInput struct {
	URL string `json:"url"`
	MS  int    `json:"ms"`
}

// limitFlow tells its counter that it enters, runs for in.MS, and tells
// the counter that it leaves: the counter sees how many run at once,
// across every process.
var limitFlow = flow.Typed(func(ctx context.Context, in limitInput, t *flow.Task) (int, error) {
	call := func(phase string) error {
		u := fmt.Sprintf("%s?task=%s&attempt=%d&pid=%d&phase=%s", in.URL, t.ID, t.Attempt, os.Getpid(), phase)
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, u, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := call("enter"); err != nil {
		return 0, err
	}
	defer func() { _ = call("leave") }()
	timer := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return t.Attempt, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
})

// runCounter is the test's HTTP server that limited_flow calls: it counts
// the runs in progress, by process, and keeps the most it saw at once. A
// run of a killed process never leaves: the test drops the runs of a
// process once it has killed it (its runs ended with it).
type runCounter struct {
	srv *httptest.Server

	mu      sync.Mutex
	running map[string]int // "task/attempt" -> pid of the runs in progress
	most    int
	enters  int
}

func newRunCounter(t *testing.T) *runCounter {
	c := &runCounter{running: map[string]int{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		pid, _ := strconv.Atoi(q.Get("pid"))
		run := q.Get("task") + "/" + q.Get("attempt")
		c.mu.Lock()
		defer c.mu.Unlock()
		switch q.Get("phase") {
		case "enter":
			c.running[run] = pid
			c.enters++
			c.most = max(c.most, len(c.running))
		case "leave":
			delete(c.running, run)
		}
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// dropProcess forgets the runs of a process that has been killed.
func (c *runCounter) dropProcess(pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for run, p := range c.running {
		if p == pid {
			delete(c.running, run)
		}
	}
}

func (c *runCounter) stats() (most, enters int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.most, c.enters
}

// TestConcurrencyLimitAcrossKilledWorkers runs 50 tasks of a flow limited
// to 2 at once (registry.Concurrency) on three worker processes, and kills
// one of them with SIGKILL at random moments, starting a replacement each
// time: the flow's counter never sees more than 2 runs at once, whatever
// process runs them, and every task ends SUCCESS. A killed worker's slots
// come back with its leases (see the README, Recovery in seconds).
func TestConcurrencyLimitAcrossKilledWorkers(t *testing.T) {
	t.Parallel()
	const (
		n         = 50
		kills     = 3
		processes = 3
		limit     = 120 * time.Second
	)
	rng := seededRand(t)
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	counter := newRunCounter(t)

	ids := make([]string, n)
	for i, ms := range randomSleeps(rng, n, 100, 300) {
		inputs, err := json.Marshal(limitInput{URL: counter.srv.URL, MS: ms})
		require.NoError(t, err)
		ids[i], err = q.broker.Enqueue(context.Background(), limitFlowName, inputs, queue.EnqueueOptions{})
		require.NoError(t, err)
	}
	args := q.workerArgs("-concurrency", "4", "-lease", "2s", "-grace", "10s")
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
		counter.dropProcess(workers[i].pid())
		killed++
		workers[i] = startWorker(t, srv.URL(), args...)
		nextKill = time.Now().Add(randomPause(rng))
	})
	for _, w := range workers {
		assert.Equal(t, 0, w.terminate(30*time.Second), "exit status of worker %d after SIGTERM", w.pid())
	}
	again := 0
	for _, id := range ids {
		if out := q.checkSucceededOnce(t, id); out.Starts > 1 {
			again++
		}
	}
	most, enters := counter.stats()
	t.Logf("%d tasks of a flow limited to %d on %d worker processes, %d killed with SIGKILL: all SUCCESS; "+
		"at most %d ran at once; %d runs, %d tasks started more than once",
		n, limitFlowSlots, processes, killed, most, enters, again)
	require.Positive(t, killed, "no worker was killed before the tasks were done")
	assert.LessOrEqual(t, most, limitFlowSlots, "more runs at once than the flow's limit")
	assert.Equal(t, limitFlowSlots, most, "the flow's slots were all used")
}
