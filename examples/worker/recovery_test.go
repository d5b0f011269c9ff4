package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Recovery in seconds: a killed worker's tasks run again within seconds
// (its heartbeats stop, and another worker's heartbeat takes its leases
// back), and a frozen one that wakes up finds its task gone and never
// runs it alongside the new attempt. The witness of both is an HTTP
// server of the test that the flow calls as it starts and then every
// witnessTick while it runs, from whichever process runs it.

// witnessFlowName is the test-only flow that calls a witness.
const witnessFlowName = "witness_flow"

// witnessTick is how often witness_flow calls its witness.
const witnessTick = 20 * time.Millisecond

// witnessInput is the input of witness_flow: the witness's URL and how
// long to run.
type witnessInput struct {
	URL string `json:"url"`
	MS  int    `json:"ms"`
}

// witnessFlow calls its witness with phase=start, then with phase=tick
// every witnessTick, each call after a look at its context, and reports a
// log step every tenth tick, until in.MS have passed or its context ends.
var witnessFlow = flow.Typed(func(ctx context.Context, in witnessInput, t *flow.Task) (int, error) {
	call := func(phase string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		u := fmt.Sprintf("%s?attempt=%d&pid=%d&phase=%s", in.URL, t.Attempt, os.Getpid(), phase)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := call("start"); err != nil {
		return 0, err
	}
	end := time.After(time.Duration(in.MS) * time.Millisecond)
	tick := time.NewTicker(witnessTick)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-end:
			return t.Attempt, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
		if err := call("tick"); err != nil {
			return 0, err
		}
		if n%10 == 0 {
			t.Progress.Log(fmt.Sprintf("attempt %d tick %d", t.Attempt, n))
		}
	}
})

// witnessCall is one call a witness received.
type witnessCall struct {
	at      time.Time
	task    string // the path the task calls, one per task
	attempt int
	pid     int
	phase   string
}

// witness is the test's HTTP server that witness_flow calls.
type witness struct {
	srv *httptest.Server

	mu    sync.Mutex
	calls []witnessCall
	// changed is closed and replaced at each call.
	changed chan struct{}
}

func newWitness(t *testing.T) *witness {
	w := &witness{changed: make(chan struct{})}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		attempt, _ := strconv.Atoi(q.Get("attempt"))
		pid, _ := strconv.Atoi(q.Get("pid"))
		w.mu.Lock()
		w.calls = append(w.calls, witnessCall{at: time.Now(), task: strings.TrimPrefix(r.URL.Path, "/"), attempt: attempt, pid: pid, phase: q.Get("phase")})
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// input returns the input of a witness_flow task that runs for d and
// calls w under path (one path per task, see witnessCall.task).
func (w *witness) input(path string, d time.Duration) string {
	return fmt.Sprintf(`{"url":%q,"ms":%d}`, w.srv.URL+"/"+url.PathEscape(path), d.Milliseconds())
}

// started returns a match for the start of attempt n of the task that
// calls under path.
func started(path string, n int) func(witnessCall) bool {
	return func(c witnessCall) bool { return c.task == path && c.phase == "start" && c.attempt == n }
}

// waitFor waits until a call matches, and returns the first that does.
func (w *witness) waitFor(t *testing.T, limit time.Duration, what string, match func(witnessCall) bool) witnessCall {
	t.Helper()
	deadline := time.After(limit)
	for {
		w.mu.Lock()
		i := slices.IndexFunc(w.calls, match)
		var c witnessCall
		if i >= 0 {
			c = w.calls[i]
		}
		changed := w.changed
		w.mu.Unlock()
		if i >= 0 {
			return c
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the witness did not see %s within %v", what, limit)
		}
	}
}

// snapshot returns the calls so far.
func (w *witness) snapshot() []witnessCall {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

// enqueueWitness enqueues a witness_flow task.
func (q *testQueue) enqueueWitness(t *testing.T, input string) string {
	t.Helper()
	id, err := q.broker.Enqueue(context.Background(), witnessFlowName, []byte(input), queue.EnqueueOptions{MaxAttempts: 50})
	require.NoError(t, err)
	return id
}

// TestKilledWorkerTaskRestartsWithinSeconds kills, with SIGKILL, the
// worker process that runs a task, again and again, and measures from the
// kill to the start of the task's next attempt (its first call to the
// witness) on another worker, with the default heartbeat and lease. The
// times are logged (median and max); the test asserts only that no
// restart waited out the 30-second lease, and that each next attempt
// knows that the worker of the one before was lost.
func TestKilledWorkerTaskRestartsWithinSeconds(t *testing.T) {
	t.Parallel()
	kills := 20
	if testing.Short() {
		kills = 3
	}
	rng := seededRand(t)
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	w := newWitness(t)
	args := q.workerArgs("-concurrency", "2")
	byPID := map[int]*workerProcess{}
	start := func() {
		p := startWorker(t, srv.URL(), args...)
		byPID[p.pid()] = p
	}
	start()
	start()

	ctx := context.Background()
	var recoveries []time.Duration
	for i := range kills {
		path := fmt.Sprintf("kill-%d", i)
		id := q.enqueueWitness(t, w.input(path, time.Minute))
		first := w.waitFor(t, time.Minute, "the first attempt start", started(path, 1))
		victim := byPID[first.pid]
		require.NotNil(t, victim, "attempt 1 ran in an unknown process %d", first.pid)
		// Kill at a random moment of the heartbeat interval.
		time.Sleep(time.Duration(rng.Int64N(int64(queue.DefaultHeartbeat))))
		victim.kill()
		killed := time.Now()
		delete(byPID, first.pid)
		start() // the replacement, as a supervisor would start one

		// The next run is attempt 2, or a later one when a worker whose
		// heartbeats lapsed (a loaded machine) leased it first and handed
		// it back unrun: each such lease is numbered too.
		next := w.waitFor(t, time.Minute, "the next attempt start", func(c witnessCall) bool {
			return c.task == path && c.phase == "start" && c.attempt >= 2
		})
		recovery := next.at.Sub(killed)
		recoveries = append(recoveries, recovery)
		assert.NotEqual(t, first.pid, next.pid)
		assert.Less(t, recovery, queue.DefaultLease, "kill %d: the task waited out its lease", i)
		require.NoError(t, q.broker.Cancel(ctx, id))
		snap := q.waitTerminalSnapshot(t, id, time.Minute)
		steps := logSteps(snap)
		if next.attempt == 2 {
			assert.Contains(t, steps, "attempt 2 of 50 starts: the worker of attempt 1 was lost", "kill %d", i)
		} else {
			t.Logf("kill %d: attempt %d ran first, after hand-backs", i, next.attempt)
			// "attempt 3 of 51 starts: attempt 2 was handed back before it
			// ran (not counted)": a hand-back adds a run.
			want := fmt.Sprintf("attempt %d of %d starts: attempt %d was handed back before it ran",
				next.attempt, 50+next.attempt-2, next.attempt-1)
			assert.True(t, slices.ContainsFunc(steps, func(m string) bool { return strings.HasPrefix(m, want) }),
				"kill %d: no step %q in %q", i, want, steps)
		}
	}
	sorted := slices.Clone(recoveries)
	slices.Sort(sorted)
	t.Logf("kill -9 to the next attempt's start, %d kills, default heartbeat %v and lease %v: median %v, max %v, min %v; all %v",
		kills, queue.DefaultHeartbeat, queue.DefaultLease, sorted[len(sorted)/2].Round(time.Millisecond),
		sorted[len(sorted)-1].Round(time.Millisecond), sorted[0].Round(time.Millisecond), roundAll(recoveries))
}

// TestFrozenWorkerDoesNotRunTaskConcurrently freezes (SIGSTOP) the worker
// process that runs a task until another worker has taken the task over
// and run it for a while, then wakes it (SIGCONT). The frozen worker must
// find its task lost and stop: the witness sees no call of the first
// attempt after the second started, and nothing the first attempt reports
// after the second started is recorded.
func TestFrozenWorkerDoesNotRunTaskConcurrently(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	w := newWitness(t)
	args := q.workerArgs("-concurrency", "2")
	a := startWorker(t, srv.URL(), args...)
	b := startWorker(t, srv.URL(), args...)
	byPID := map[int]*workerProcess{a.pid(): a, b.pid(): b}

	const path = "frozen"
	const runFor = 6 * time.Second
	id := q.enqueueWitness(t, w.input(path, runFor))
	first := w.waitFor(t, time.Minute, "the first attempt start", started(path, 1))
	frozen := byPID[first.pid]
	require.NotNil(t, frozen)
	w.waitFor(t, time.Minute, "the first attempt running", func(c witnessCall) bool {
		return c.task == path && c.attempt == 1 && c.phase == "tick" && c.at.Sub(first.at) > 500*time.Millisecond
	})
	require.NoError(t, frozen.cmd.Process.Signal(syscall.SIGSTOP))
	second := w.waitFor(t, time.Minute, "the second attempt start", started(path, 2))
	assert.NotEqual(t, first.pid, second.pid)
	// The second attempt runs a while before the first wakes.
	w.waitFor(t, time.Minute, "the second attempt running", func(c witnessCall) bool {
		return c.task == path && c.attempt == 2 && c.at.Sub(second.at) > time.Second
	})
	require.NoError(t, frozen.cmd.Process.Signal(syscall.SIGCONT))
	snap := q.waitTerminalSnapshot(t, id, time.Minute)

	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, "2", string(snap.Details.FinalResult), "the second attempt ended the task")
	var late []witnessCall
	attempt1 := 0
	for _, c := range w.snapshot() {
		if c.task != path || c.attempt != 1 {
			continue
		}
		attempt1++
		if !c.at.Before(second.at) {
			late = append(late, c)
		}
	}
	assert.Positive(t, attempt1)
	assert.Empty(t, late, "calls of the first attempt after the second started: the task ran twice at once")

	// The first attempt's reports stop where the second starts.
	steps := logSteps(snap)
	opened := slices.Index(steps, "attempt 2 of 50 starts: the worker of attempt 1 was lost")
	require.GreaterOrEqual(t, opened, 0, "steps %q", steps)
	for _, s := range steps[opened:] {
		assert.NotContains(t, s, "attempt 1 tick", "a report of the first attempt recorded after the second started")
	}
	// The woken worker is alive and well: it shuts down cleanly.
	assert.Equal(t, 0, frozen.terminate(30*time.Second), "exit status of the woken worker")
	log := frozen.logTail(200)
	assert.Regexp(t, "no heartbeat reached the backend in time|lease lost", log, "the woken worker logs why it stopped the flow")
	t.Logf("the woken worker's log:\n%s", log)
}

// waitTerminalSnapshot waits for the task to end and returns its snapshot.
func (q *testQueue) waitTerminalSnapshot(t *testing.T, id string, limit time.Duration) progress.Snapshot {
	t.Helper()
	q.waitFinished(t, []string{id}, limit, nil)
	snap, _, err := q.b.Snapshot(context.Background(), id)
	require.NoError(t, err)
	return snap
}

// logSteps lists the messages of a snapshot's log steps.
func logSteps(snap progress.Snapshot) []string {
	var msgs []string
	for _, s := range snap.Details.StepResults {
		if s.Type == progress.StepLog {
			msgs = append(msgs, s.Message)
		}
	}
	return msgs
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
