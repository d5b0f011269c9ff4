package ssehttp_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// signallingWaiter is the Broker as a TaskWaiter that says when a Wait
// begins.
type signallingWaiter struct {
	*queue.Broker
	waiting chan string
}

func (s signallingWaiter) Wait(ctx context.Context, id string) (*queue.TaskInfo, error) {
	s.waiting <- id
	return s.Broker.Wait(ctx, id)
}

// answer is what a request got.
type answer struct {
	status int
	body   []byte
	err    error
}

// getAsync is get for a goroutine other than the test's.
func (e *env) getAsync(path string) answer {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.server.URL+path, nil)
	if err != nil {
		return answer{err: err}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: body, err: err}
}

// queueOnly hides all of the Broker but ssehttp.Queue: the handler then
// waits on the progress store's live feed.
type queueOnly struct{ ssehttp.Queue }

// TestTaskWait checks GET /tasks/{id}/?wait=: the answer comes when the
// task ends, with the JSON of the route without the parameter, through a
// Queue that is a TaskWaiter and through the progress store.
func TestTaskWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue func(*queue.Broker) ssehttp.Queue
		// withRecord: the answer carries the queue's record (flow, attempt).
		withRecord bool
	}{
		{"the Broker waits", nil, true},
		{"the progress store waits", func(b *queue.Broker) ssehttp.Queue { return queueOnly{b} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{queue: tc.queue})
			id := e.start(t, "gated_flow")
			e.waitStarted(t, id)

			done := make(chan answer, 1)
			go func() { done <- e.getAsync("/tasks/" + id + "/?wait=15s") }()
			select {
			case a := <-done:
				require.FailNow(t, "answered before the task ended", "%d %s %v", a.status, a.body, a.err)
			case <-time.After(100 * time.Millisecond):
			}
			e.release(t, 5)
			var a answer
			select {
			case a = <-done:
			case <-time.After(testTimeout):
				require.FailNow(t, "no answer after the task ended")
			}
			require.NoError(t, a.err)
			require.Equal(t, http.StatusOK, a.status, "%s", a.body)
			var got map[string]any
			require.NoError(t, json.Unmarshal(a.body, &got))
			assert.Equal(t, "SUCCESS", got["state"])
			assert.Equal(t, "gated done", got["details"].(map[string]any)["final_result"])
			if tc.withRecord {
				assert.Equal(t, "gated_flow", got["flow"])
			}

			resp, plain := e.get(t, "/tasks/"+id+"/")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.JSONEq(t, string(plain), string(a.body), "the same JSON as without wait")
			resp, again := e.get(t, "/tasks/"+id+"/?wait=30s")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.JSONEq(t, string(plain), string(again), "an ended task answers at once, the same")
		})
	}
}

// TestTaskWaitPasses: a wait that passes (as asked, or cut to MaxWait)
// answers the task as it is, with 200.
func TestTaskWaitPasses(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{MaxWait: 100 * time.Millisecond}})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	for _, wait := range []string{"50ms", "1h"} {
		resp, body := e.get(t, "/tasks/"+id+"/?wait="+wait)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		var got struct {
			State progress.State `json:"state"`
		}
		require.NoError(t, json.Unmarshal(body, &got))
		assert.Equal(t, progress.StateProgress, got.State, "wait=%s", wait)
	}
	e.release(t, 5)
}

// TestTaskWaitOutlastsWriteTimeout: a server whose WriteTimeout is shorter
// than the wait still delivers the answer.
func TestTaskWaitOutlastsWriteTimeout(t *testing.T) {
	e := newEnv(t, envOptions{server: func(s *httptest.Server) { s.Config.WriteTimeout = 50 * time.Millisecond }})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	a := e.getAsync("/tasks/" + id + "/?wait=300ms")
	require.NoError(t, a.err, "the answer was cut")
	assert.Equal(t, http.StatusOK, a.status, "%s", a.body)
	e.release(t, 5)
}

func TestTaskWaitBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	const notADuration = `{"error":"wait must be a duration such as 30s, at most 1m0s"}`
	const twice = `{"error":"wait given 2 times; give it once"}`
	for _, tc := range []struct {
		name, path string
		status     int
		body       string // for a 400
	}{
		{"not a duration", "/tasks/" + id + "/?wait=soon", http.StatusBadRequest, notADuration},
		{"no unit", "/tasks/" + id + "/?wait=30", http.StatusBadRequest, notADuration},
		{"negative", "/tasks/" + id + "/?wait=-1s", http.StatusBadRequest, notADuration},
		{"given twice", "/tasks/" + id + "/?wait=0s&wait=30s", http.StatusBadRequest, twice},
		{"given twice, the first empty", "/tasks/" + id + "/?wait=&wait=30s", http.StatusBadRequest, twice},
		{"given twice alike", "/tasks/" + id + "/?wait=0s&wait=0s", http.StatusBadRequest, twice},
		{"given three times", "/tasks/" + id + "/?wait=0s&wait=1s&wait=2s", http.StatusBadRequest, `{"error":"wait given 3 times; give it once"}`},
		{"unknown task", "/tasks/" + queue.NewID() + "/?wait=1s", http.StatusNotFound, ""},
		{"invalid id", "/tasks/no%20such/?wait=1s", http.StatusNotFound, ""},
		{"zero is no wait", "/tasks/" + id + "/?wait=0s", http.StatusOK, ""},
		{"empty is no wait", "/tasks/" + id + "/?wait=", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.get(t, tc.path)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", body)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			if tc.status == http.StatusBadRequest {
				assert.JSONEq(t, tc.body, string(body))
			}
		})
	}
}

// TestTaskWaitClientLeaves: a client that disconnects in the middle of a
// wait leaves nothing behind: no goroutine, no subscription.
func TestTaskWaitClientLeaves(t *testing.T) {
	waiting := make(chan string, 1)
	e := newEnv(t, envOptions{queue: func(b *queue.Broker) ssehttp.Queue {
		return signallingWaiter{Broker: b, waiting: waiting}
	}})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.server.URL+"/tasks/"+id+"/?wait=1m", nil)
	require.NoError(t, err)
	failed := make(chan error, 1)
	go func() {
		resp, err := e.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		failed <- err
	}()
	select {
	case got := <-waiting:
		require.Equal(t, id, got)
	case <-time.After(testTimeout):
		require.FailNow(t, "the handler did not wait")
	}
	cancel()
	assert.ErrorIs(t, <-failed, context.Canceled)
	e.client.CloseIdleConnections()
	leakcheck.Settle(t, baseline, 10*time.Second)

	e.release(t, 5)
	assert.Equal(t, progress.StateSuccess, e.waitTerminal(t, id).State, "the task goes on")
}
