package redisbackend_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// These tests run the whole stack (HTTP handler, broker, worker) on a
// redis-server that goes away and comes back.

var quiet = slog.New(slog.DiscardHandler)

// serve serves h until the test ends.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// sseRecord is one block of an event stream: a message, or a comment.
type sseRecord struct {
	id, event, data string
	comment         bool
}

// watch opens GET /task-status/{id}/ and returns its records, in order,
// on a channel closed when the stream ends.
func watch(ctx context.Context, t *testing.T, base, id string) <-chan sseRecord {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	out := make(chan sseRecord, 1000)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		readSSE(resp.Body, out)
	}()
	return out
}

// readSSE parses an event stream into records until it ends.
func readSSE(r io.Reader, out chan<- sseRecord) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var rec sseRecord
	var fields bool
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if fields {
				out <- rec
			}
			rec, fields = sseRecord{}, false
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			rec.comment, fields = true, true
		case "id":
			rec.id, fields = value, true
		case "event":
			rec.event = value
		case "data":
			rec.data, fields = rec.data+value, true
		}
	}
}

// next returns the next record, failing the test if none comes in time or
// the stream ends.
func next(t *testing.T, records <-chan sseRecord) sseRecord {
	t.Helper()
	select {
	case r, ok := <-records:
		require.True(t, ok, "the event stream ended early")
		return r
	case <-time.After(waitLimit):
		require.FailNow(t, "no record on the event stream")
	}
	return sseRecord{}
}

func TestEventStreamAcrossRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	b := newBackend(t, newClient(t, srv), redisbackend.Config{OpTimeout: time.Second})
	h := ssehttp.New(ssehttp.Config{
		Queue: queue.NewBroker(b, b, queue.BrokerConfig{}), Progress: b, Registry: registry.New(),
		Heartbeat: 50 * time.Millisecond, Logger: quiet,
	})
	web := serve(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	const before, after = 3, 4
	for i := range before {
		appendRetrying(ctx, t, b, task.ID, progress.LogEvent(fmt.Sprintf("before %d", i)))
	}
	records := watch(ctx, t, web.URL, task.ID)
	var seen []sseRecord
	for len(seen) < before {
		if r := next(t, records); !r.comment {
			seen = append(seen, r)
		}
	}

	srv.Kill()
	// The stream stays open while Redis is away: heartbeats go on, no
	// message is made up.
	pings := 0
	for pings < 3 {
		r := next(t, records)
		require.True(t, r.comment, "only heartbeats while Redis is down, got %+v", r)
		pings++
	}
	srv.Restart()

	for i := range after {
		appendRetrying(ctx, t, b, task.ID, progress.LogEvent(fmt.Sprintf("after %d", i)))
	}
	appendRetrying(ctx, t, b, task.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"ok"`)})
	for r := range records {
		if !r.comment {
			seen = append(seen, r)
		}
	}
	require.NoError(t, ctx.Err(), "the stream did not end after the terminal event")

	events := eventsRetrying(ctx, t, b, task.ID)
	require.Len(t, events, before+after+1, "nothing appended was lost by the restart")
	var gotIDs []string
	for _, r := range seen {
		gotIDs = append(gotIDs, r.id)
	}
	assert.Equal(t, ids(events), gotIDs, "every event exactly once, in order, across the restart")
	var last progress.Snapshot
	require.NoError(t, json.Unmarshal([]byte(seen[len(seen)-1].data), &last))
	assert.Equal(t, progress.StateSuccess, last.State)
	assert.Len(t, last.Details.StepResults, before+after, "the last snapshot holds every step")
}

func TestHTTPWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{OpTimeout: 300 * time.Millisecond})
	reg := registry.New()
	reg.MustRegister("poem", flow.Func(func(context.Context, *flow.Task) (any, error) { return "a poem", nil }))
	web := serve(t, ssehttp.New(ssehttp.Config{
		Queue: queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg}), Progress: b, Registry: reg, Logger: quiet,
	}))
	// The client's timeout only keeps a hanging request from hanging the
	// test.
	client := &http.Client{Timeout: waitLimit}
	do := func(method, path string) (int, string) {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"flow":"poem"}`)
		}
		req, err := http.NewRequest(method, web.URL+path, body)
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err, "%s %s", method, path)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(data)
	}
	status, body := do(http.MethodPost, "/start-task/")
	require.Equal(t, http.StatusOK, status, body)
	var started struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &started))
	id := started.TaskID

	srv.Stop()
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/start-task/"},
		{http.MethodGet, "/tasks/" + id + "/"},
		{http.MethodPost, "/cancel-task/" + id + "/"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			status, body := do(tc.method, tc.path)
			assert.Equal(t, http.StatusServiceUnavailable, status, body)
			var e struct {
				Error string `json:"error"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &e), "body %q", body)
			assert.Contains(t, e.Error, "unavailable")
		})
	}
	// A stream opened meanwhile is told when to come back, in a form an
	// EventSource follows (see ssehttp's TestStreamOpenedWhileRedisDown).
	status, body = do(http.MethodGet, "/task-status/"+id+"/")
	assert.Equal(t, http.StatusOK, status, body)
	assert.Contains(t, body, "\nretry: ")

	srv.Restart()
	eventually(t, func() bool {
		status, _ := do(http.MethodPost, "/start-task/")
		return status == http.StatusOK
	}, "start-task works again once Redis is back")
}

func TestWorkerAcrossRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	// The worker's side gives up on Redis after a second; the test's own
	// calls (the enqueues, then the reads) get the default OpTimeout, and
	// the reads are retried while Redis does not answer: with appendfsync
	// always, a loaded machine can hold up Redis past a second.
	cfg := redisbackend.Config{Prefix: uniquePrefix(t), OpTimeout: time.Second}
	webCfg := cfg
	webCfg.OpTimeout = redisbackend.DefaultOpTimeout
	web := newBackend(t, newClient(t, srv), webCfg)
	workerSide := newBackend(t, newClient(t, srv), cfg)
	reg := registry.New()
	broker := queue.NewBroker(web, web, queue.BrokerConfig{Registry: reg})

	var mu sync.Mutex
	runs := map[string]int{}
	reg.MustRegister("steps", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		mu.Lock()
		runs[ft.ID]++
		mu.Unlock()
		for i := range 3 {
			ft.Progress.Log(fmt.Sprintf("step %d", i))
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return ft.ID, nil
	}))
	w := queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
		Registry: reg, Concurrency: 4, Lease: time.Second, Logger: quiet,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond },
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitLimit):
			t.Error("Worker.Run did not return")
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	defer cancel()
	const n = 40
	taskIDs := make([]string, n)
	for i := range taskIDs {
		id, err := broker.Enqueue(ctx, "steps", nil, queue.EnqueueOptions{MaxAttempts: 10})
		require.NoError(t, err)
		taskIDs[i] = id
	}
	finished := func() int {
		k := 0
		for _, id := range taskIDs {
			snap, _, err := web.Snapshot(ctx, id)
			if err == nil && snap.State.Terminal() {
				k++
			}
		}
		return k
	}
	eventually(t, func() bool { return finished() >= 4 }, "the worker started on the tasks")

	srv.Kill() // a crash; with appendfsync always nothing accepted is lost
	time.Sleep(200 * time.Millisecond)
	srv.Restart()

	for _, id := range taskIDs {
		var snap progress.Snapshot
		for {
			var err error
			snap, _, err = web.Snapshot(ctx, id)
			if err == nil && snap.State.Terminal() {
				break
			}
			if err != nil && !errors.Is(err, queue.ErrUnavailable) {
				require.NoError(t, err, "task %s", id)
			}
			require.NoError(t, ctx.Err(), "task %s did not finish after the restart", id)
			time.Sleep(20 * time.Millisecond)
		}
		assert.Equal(t, progress.StateSuccess, snap.State, "task %s: %q", id, snap.Details.Status)
		terminal := 0
		for _, e := range eventsRetrying(ctx, t, web, id) {
			if e.Terminal() {
				terminal++
			}
		}
		assert.Equal(t, 1, terminal, "task %s has one terminal state", id)
	}
	mu.Lock()
	twice := 0
	for _, r := range runs {
		if r > 1 {
			twice++
		}
	}
	assert.Len(t, runs, n, "every task ran")
	mu.Unlock()
	t.Logf("%d of %d tasks ran more than once across the restart", twice, n)
}

// TestOutageLongerThanLivenessCostsNoAttempt: Redis goes away for longer
// than a worker's liveness window while a flow runs. The worker stops the
// flow (it can no longer count on its lease), but the lapse is the
// backend's fault, not the flow's: its heartbeats kept going out and
// failing. The task is handed back once Redis is there again, without
// spending an attempt, so that a task with MaxAttempts 1 runs again and
// succeeds, and its next attempt says why.
//
// The worker tells an outage from a stuck heartbeat by the clock: it
// must send MissedBeats-1 heartbeats in its window, and the last of them
// goes out half an interval before the window ends. A real redis-server
// keeps the test off a synctest clock, so that half interval is the
// test's margin against the scheduling noise of a loaded machine: a
// second here (a 2 s interval), where 200 ms (400 ms) let a process
// stalled for 250 ms take the outage for its own fault now and then,
// spend the task's one attempt, and leave it leased for a minute. The
// lease is long, so that only the hand-back can bring the task back
// within the test. The test waits for events, not for time: the flow's
// first report recorded before Redis goes away, then the flow's
// cancellation while Redis is down.
func TestOutageLongerThanLivenessCostsNoAttempt(t *testing.T) {
	t.Parallel()
	q := newOutageQueue(t)
	startWorker(t, queue.NewWorker(q.b, q.b, q.workerConfig("", outageHeartbeat)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	id := q.startWaiting(ctx, t)
	q.stop(t)
	q.srv.Restart()

	snap, msgs := q.waitEnded(ctx, t, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult))
	assert.Contains(t, msgs, "waiting")
	assert.Contains(t, msgs, "attempt 2 of 2 starts: the worker of attempt 1 could not reach the backend (not counted)")
}
