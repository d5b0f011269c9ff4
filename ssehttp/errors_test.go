package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// unavailableQueue is a Queue whose backend cannot be reached.
type unavailableQueue struct{}

func (unavailableQueue) Enqueue(context.Context, string, json.RawMessage, queue.EnqueueOptions) (string, error) {
	return "", fmt.Errorf("enqueue: dial redis: %w", queue.ErrUnavailable)
}

func (unavailableQueue) Cancel(context.Context, string) error {
	return fmt.Errorf("cancel: dial redis: %w", queue.ErrUnavailable)
}

// brokenQueue fails with an error that says nothing about availability.
type brokenQueue struct{ unavailableQueue }

func (brokenQueue) Enqueue(context.Context, string, json.RawMessage, queue.EnqueueOptions) (string, error) {
	return "", errors.New("secret internal detail: disk on fire")
}

// TestErrorMatrix checks every refusal of the API: its status and its
// {"error": ...} body.
func TestErrorMatrix(t *testing.T) {
	e := newEnv(t, envOptions{})
	finished := e.start(t, "poem_flow")
	e.waitTerminal(t, finished)
	unknown := queue.NewID()

	refusing := ssehttp.New(ssehttp.Config{
		Queue: e.broker, Progress: e.store, Registry: registry.New(),
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			if a.Action == ssehttp.ActionFlows {
				return nil
			}
			return fmt.Errorf("%s refused for this user", a.Action)
		},
	})
	poemEntry, err := testRegistry(0, nil, nil).Lookup("poem_flow")
	require.NoError(t, err)
	poemOnly := registry.New()
	poemOnly.MustRegister("poem_flow", poemEntry.Flow)
	down := ssehttp.New(ssehttp.Config{Queue: unavailableQueue{}, Progress: e.store, Registry: poemOnly})
	broken := ssehttp.New(ssehttp.Config{Queue: brokenQueue{}, Progress: e.store, Registry: poemOnly})
	// The queue checks the flow against its own registry, which lacks
	// what the handler's lists (a BrokerConfig without Registry uses
	// registry.Default): the host's mistake, not the client's, so a 500,
	// logged with what to fix, not a 404 for a flow GET /flows/ lists.
	var staleLog syncbuf.Buffer
	stale := ssehttp.New(ssehttp.Config{Queue: queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), e.store, queue.BrokerConfig{Registry: registry.New()}),
		Progress: e.store, Registry: poemOnly, Logger: slog.New(slog.NewTextHandler(&staleLog, nil))})

	const poem = `{"flow":"poem_flow","inputs":{}}`
	big := `{"flow":"poem_flow","inputs":{"pad":"` + strings.Repeat("x", ssehttp.DefaultMaxBodyBytes) + `"}}`
	tests := []struct {
		name    string
		handler http.Handler // nil: the env's handler
		method  string
		path    string
		headers map[string]string
		body    string
		status  int
		// inError must be part of the error message ("" for a success).
		inError string
	}{
		{name: "invalid JSON", method: "POST", path: "/start-task/", body: `{"flow":`, status: 400, inError: "not valid JSON"},
		{name: "trailing garbage", method: "POST", path: "/start-task/", body: poem + `x`, status: 400, inError: "after the JSON"},
		{name: "two objects", method: "POST", path: "/start-task/", body: poem + poem, status: 400, inError: "after the JSON"},
		{name: "empty body", method: "POST", path: "/start-task/", body: ``, status: 400, inError: "not valid JSON"},
		{name: "body not an object", method: "POST", path: "/start-task/", body: `["poem_flow"]`, status: 400, inError: "JSON object"},
		{name: "missing flow", method: "POST", path: "/start-task/", body: `{"inputs":{}}`, status: 400, inError: `missing "flow"`},
		{name: "empty flow", method: "POST", path: "/start-task/", body: `{"flow":""}`, status: 400, inError: `missing "flow"`},
		{name: "null flow", method: "POST", path: "/start-task/", body: `{"flow":null}`, status: 400, inError: `missing "flow"`},
		{name: "flow not a string", method: "POST", path: "/start-task/", body: `{"flow":7}`, status: 400, inError: "must be a string"},
		{name: "unknown flow", method: "POST", path: "/start-task/", body: `{"flow":"nope"}`, status: 404, inError: "unknown flow"},
		{name: "internal flow", method: "POST", path: "/start-task/", body: `{"flow":"internal_flow"}`, status: 404, inError: "unknown flow"},
		{name: "inputs not an object", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","inputs":[1]}`, status: 422, inError: "JSON object"},
		{name: "required input missing", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{}}`, status: 422, inError: `"question"`},
		{name: "input of the wrong type", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"question":5}}`, status: 422, inError: `"question"`},
		{name: "unknown input", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"question":"q","x":1}}`, status: 422, inError: `"x"`},
		{name: "typed inputs accepted", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"question":"why?"}}`, status: 200},
		{name: "inputs optional", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow"}`, status: 200},
		{name: "duplicate flow", method: "POST", path: "/start-task/", body: `{"flow":"nope","flow":"poem_flow"}`, status: 400, inError: `duplicate key "flow"`},
		{name: "duplicate flow spelt with an escape", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","\u0066low":"nope"}`, status: 400, inError: `duplicate key "flow"`},
		{name: "duplicate inputs", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","inputs":{},"inputs":{"a":1}}`, status: 400, inError: `duplicate key "inputs"`},
		{name: "duplicate key in another member", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","meta":[{"x":1,"x":2}]}`, status: 400, inError: `duplicate key "meta[0].x"`},
		{name: "FLOW in capitals", method: "POST", path: "/start-task/", body: `{"FLOW":"poem_flow"}`, status: 400, inError: `"FLOW"`},
		{name: "Inputs capitalised", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","Inputs":{}}`, status: 400, inError: `"Inputs"`},
		{name: "duplicate input", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"question":"a","question":"b"}}`, status: 422, inError: `"question"`},
		{name: "duplicate nested input of an untyped flow", method: "POST", path: "/start-task/", body: `{"flow":"poem_flow","inputs":{"a":{"b":1,"b":2}}}`, status: 422, inError: `"a.b"`},
		{name: "typed input in the wrong case", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"Question":"q"}}`, status: 422, inError: `"Question"`},
		{name: "typed input in the wrong case beside the right one", method: "POST", path: "/start-task/", body: `{"flow":"web_search_flow","inputs":{"question":"q","QUESTION":"r"}}`, status: 422, inError: `"QUESTION"`},
		{name: "unknown flow with duplicate inputs", method: "POST", path: "/start-task/", body: `{"flow":"nope","inputs":{"a":1,"a":2}}`, status: 404, inError: "unknown flow"},
		{name: "oversized body", method: "POST", path: "/start-task/", body: big, status: 413, inError: "too large"},
		{name: "wrong content type", method: "POST", path: "/start-task/", headers: map[string]string{"Content-Type": "text/plain"}, body: poem, status: 415, inError: "application/json"},
		{name: "no content type", method: "POST", path: "/start-task/", headers: map[string]string{"Content-Type": ""}, body: poem, status: 415, inError: "application/json"},
		{name: "content type with charset", method: "POST", path: "/start-task/", headers: map[string]string{"Content-Type": "application/json; charset=utf-8"}, body: poem, status: 200},
		{name: "cross-site POST", method: "POST", path: "/start-task/", headers: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, body: poem, status: 403, inError: "cross-origin"},
		{name: "cross-origin POST from an old browser", method: "POST", path: "/start-task/", headers: map[string]string{"Origin": "https://evil.example"}, body: poem, status: 403, inError: "cross-origin"},
		{name: "cross-site cancel", method: "POST", path: "/cancel-task/" + unknown + "/", headers: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, inError: "cross-origin"},
		{name: "curl-like POST", method: "POST", path: "/start-task/", body: poem, status: 200},
		{name: "same-origin fetch", method: "POST", path: "/start-task/", headers: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}, body: poem, status: 200},
		{name: "without trailing slash", method: "POST", path: "/start-task", body: poem, status: 200},
		{name: "status of an unknown task", method: "GET", path: "/task-status/" + unknown + "/", status: 404, inError: "not found"},
		{name: "status of an invalid id", method: "GET", path: "/task-status/" + strings.Repeat("a", 65) + "/", status: 404, inError: "not found"},
		{name: "task unknown", method: "GET", path: "/tasks/" + unknown + "/", status: 404, inError: "not found"},
		{name: "task invalid id", method: "GET", path: "/tasks/a.b/", status: 404, inError: "not found"},
		{name: "cancel unknown", method: "POST", path: "/cancel-task/" + unknown + "/", status: 404, inError: "not found"},
		{name: "cancel invalid id", method: "POST", path: "/cancel-task/%20/", status: 404, inError: "not found"},
		{name: "cancel finished", method: "POST", path: "/cancel-task/" + finished + "/", status: 409, inError: "finished"},
		{name: "malformed Last-Event-ID", method: "GET", path: "/task-status/" + finished + "/", headers: map[string]string{"Last-Event-ID": "abc"}, status: 400, inError: "Last-Event-ID"},
		{name: "malformed lastEventId", method: "GET", path: "/task-status/" + finished + "/?lastEventId=-1", status: 400, inError: "Last-Event-ID"},
		{name: "lastEventId given twice", method: "GET", path: "/task-status/" + finished + "/?lastEventId=1&lastEventId=2", status: 400, inError: "lastEventId given 2 times"},
		{name: "lastEventId twice under the header", method: "GET", path: "/task-status/" + finished + "/?lastEventId=1&lastEventId=2", headers: map[string]string{"Last-Event-ID": "abc"}, status: 400, inError: "malformed Last-Event-ID"},
		{name: "huge Last-Event-ID", method: "GET", path: "/task-status/" + finished + "/", headers: map[string]string{"Last-Event-ID": strings.Repeat("1", 300)}, status: 400, inError: "Last-Event-ID"},
		{name: "authorizer refuses start", handler: refusing, method: "POST", path: "/start-task/", body: poem, status: 403, inError: "start refused for this user"},
		{name: "authorizer refuses watch", handler: refusing, method: "GET", path: "/task-status/" + finished + "/", status: 403, inError: "watch refused"},
		{name: "authorizer refuses read", handler: refusing, method: "GET", path: "/tasks/" + finished + "/", status: 403, inError: "read refused"},
		{name: "authorizer refuses cancel", handler: refusing, method: "POST", path: "/cancel-task/" + finished + "/", status: 403, inError: "cancel refused"},
		{name: "authorizer allows flows", handler: refusing, method: "GET", path: "/flows/", status: 200},
		{name: "queue unavailable on start", handler: down, method: "POST", path: "/start-task/", body: poem, status: 503, inError: "unavailable"},
		{name: "queue unavailable on cancel", handler: down, method: "POST", path: "/cancel-task/" + finished + "/", status: 503, inError: "unavailable"},
		{name: "flow unknown to the queue", handler: stale, method: "POST", path: "/start-task/", body: poem, status: 500, inError: `the server's queue does not know flow "poem_flow"`},
		{name: "queue failure hides its cause", handler: broken, method: "POST", path: "/start-task/", body: poem, status: 500, inError: "internal error"},
		{name: "unknown route", method: "GET", path: "/nope/", status: 404, inError: "not found"},
		{name: "GET on start-task", method: "GET", path: "/start-task/", status: 405, inError: "method not allowed"},
		{name: "DELETE on a task", method: "DELETE", path: "/tasks/" + finished + "/", status: 405, inError: "method not allowed"},
		{name: "start-task subpath", method: "POST", path: "/start-task/x", body: poem, status: 404, inError: "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h := tc.handler
			if h == nil {
				h = e.handler
			}
			h.ServeHTTP(rec, req)
			resp := rec.Result()
			body := rec.Body.Bytes()
			require.Equal(t, tc.status, resp.StatusCode, "body: %s", body)
			if tc.inError == "" {
				assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				assert.True(t, json.Valid(body), "body: %s", body)
				return
			}
			msg := errorOf(t, resp, body)
			assert.Contains(t, msg, tc.inError)
			assert.NotContains(t, msg, "secret", "internal details never reach the client")
		})
	}
	assert.Contains(t, staleLog.String(), `give queue.BrokerConfig.Registry the registry of ssehttp.Config.Registry" flow=poem_flow`,
		"the log says what to fix")
}

// TestStartTaskAnswer checks the body of a successful start-task and that
// the task exists, with its flow and attempt visible at /tasks/{id}/.
func TestStartTaskAnswer(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.post(t, "/start-task/", `{"flow":"web_search_flow","inputs":{"question":"tides"}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var started map[string]string
	require.NoError(t, json.Unmarshal(body, &started))
	require.Len(t, started, 1)
	id := started["task_id"]
	require.True(t, queue.ValidID(id))
	e.waitTerminal(t, id)

	resp, body = e.get(t, "/tasks/"+id+"/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var task struct {
		TaskID      string           `json:"task_id"`
		State       progress.State   `json:"state"`
		Details     progress.Details `json:"details"`
		LastEventID string           `json:"last_event_id"`
		Flow        string           `json:"flow"`
		Attempt     int              `json:"attempt"`
	}
	require.NoError(t, json.Unmarshal(body, &task))
	snap, last, err := e.store.Snapshot(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, id, task.TaskID)
	assert.Equal(t, snap.State, task.State)
	assert.Equal(t, snap.Details.StepResults, task.Details.StepResults)
	assert.JSONEq(t, `"answer to tides"`, string(task.Details.FinalResult))
	assert.Equal(t, last, task.LastEventID)
	assert.Equal(t, "web_search_flow", task.Flow)
	assert.Equal(t, 1, task.Attempt)

	// Without a TaskInspector, the snapshot alone.
	plain := ssehttp.New(ssehttp.Config{Queue: unavailableQueue{}, Progress: e.store, Registry: registry.New()})
	rec := httptest.NewRecorder()
	plain.ServeHTTP(rec, httptest.NewRequest("GET", "/tasks/"+id, nil))
	require.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
	var bare map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &bare))
	assert.NotContains(t, bare, "flow")
	assert.JSONEq(t, `"`+last+`"`, string(bare["last_event_id"]))
}

// TestFlows checks GET /flows/: every registered flow with its
// description and input schema.
func TestFlows(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.get(t, "/flows/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var flows []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"input_schema"`
	}
	require.NoError(t, json.Unmarshal(body, &flows))
	byName := map[string]int{}
	for i, f := range flows {
		byName[f.Name] = i
	}
	require.Contains(t, byName, "poem_flow")
	require.Contains(t, byName, "web_search_flow")
	assert.Equal(t, "Writes a short poem", flows[byName["poem_flow"]].Description)
	var schema struct {
		Type       string                     `json:"type"`
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	}
	require.NoError(t, json.Unmarshal(flows[byName["web_search_flow"]].Schema, &schema))
	assert.Equal(t, "object", schema.Type)
	assert.Contains(t, schema.Properties, "question")
	assert.Equal(t, []string{"question"}, schema.Required)

	resp2, body2 := e.get(t, "/flows")
	assert.Equal(t, http.StatusOK, resp2.StatusCode)
	assert.JSONEq(t, string(body), string(body2), "the route answers without its slash too")
}

// TestMountedUnderPrefix serves the handler under /api with
// http.StripPrefix and runs a task through it.
func TestMountedUnderPrefix(t *testing.T) {
	e := newEnv(t, envOptions{mount: func(h http.Handler) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/api/", http.StripPrefix("/api", h))
		return mux
	}})
	resp, body := e.post(t, "/api/start-task/", `{"flow":"poem_flow","inputs":{}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var started struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal(body, &started))

	u := "/api/task-status/" + started.TaskID // without the slash
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.server.URL+u, nil)
	require.NoError(t, err)
	sresp, err := e.client.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { sresp.Body.Close() })
	require.Equal(t, http.StatusOK, sresp.StatusCode)
	w := &watch{resp: sresp, sse: sse.NewReader(sresp.Body), cancel: func() {}}
	all := w.rest(t)
	require.NotEmpty(t, all)
	assert.Equal(t, progress.StateSuccess, snapshotOf(t, all[len(all)-1]).State)

	resp, body = e.get(t, "/api/tasks/"+started.TaskID)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	resp, body = e.get(t, "/api/flows/")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	resp, body = e.get(t, "/api/nope")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	errorOf(t, resp, body)
}

// downStore is a progress store that cannot be reached: every read fails
// with an error wrapping queue.ErrUnavailable, as the Redis backend's do.
type downStore struct{ progress.Backend }

var errStoreDown = fmt.Errorf("read snapshot: dial tcp: connection refused: %w", queue.ErrUnavailable)

func (downStore) Snapshot(context.Context, string) (progress.Snapshot, string, error) {
	return progress.Snapshot{}, "", errStoreDown
}

func (downStore) Head(context.Context, string) (progress.State, string, error) {
	return "", "", errStoreDown
}

func (downStore) Events(context.Context, string, string) ([]progress.Event, error) {
	return nil, errStoreDown
}

func (downStore) Subscribe(context.Context, string, string) (<-chan progress.Event, error) {
	return nil, errStoreDown
}

func (downStore) Create(context.Context, string) error { return errStoreDown }

// TestStoreUnavailable checks that an unreachable progress store is a 503
// with a Retry-After header on every JSON route that reads it, the long
// poll included, and that a stream opened meanwhile is an event stream
// that only says when to come back (see TestStreamOpenedWhileStoreDown).
func TestStoreUnavailable(t *testing.T) {
	store := downStore{progress.NewMemoryStore(progress.MemoryConfig{})}
	reg := registry.New()
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{Registry: reg})
	poem, err := testRegistry(0, nil, nil).Lookup("poem_flow")
	require.NoError(t, err)
	reg.MustRegister("poem_flow", poem.Flow)
	id := queue.NewID()
	for _, tc := range []struct {
		name  string
		queue ssehttp.Queue
	}{
		{"broker", broker},
		{"queue without TaskInspector", unavailableQueue{}},
	} {
		h := ssehttp.New(ssehttp.Config{Queue: tc.queue, Progress: store, Registry: reg, Retry: 1500 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/start-task/", `{"flow":"poem_flow"}`},
			{"GET", "/tasks/" + id + "/", ""},
			{"GET", "/tasks/" + id + "/?wait=1s", ""},
			{"POST", "/cancel-task/" + id + "/", ""},
		} {
			t.Run(tc.name+" "+r.method+" "+r.path, func(t *testing.T) {
				req := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				resp := rec.Result()
				require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "body: %s", rec.Body)
				assert.Equal(t, "2", resp.Header.Get("Retry-After"), "Config.Retry rounded up to seconds")
				assert.Contains(t, errorOf(t, resp, rec.Body.Bytes()), "unavailable")
			})
		}
	}
}

// TestStreamOpenedWhileStoreDown checks the answer to a stream request
// that only an unreachable backend keeps from opening: 200, an event
// stream holding a comment that says why and a "retry:" line of
// Config.Retry, and nothing else, in every stream mode, after any
// Last-Event-ID, and when the backend is down at the lookup of the task's
// owner. An EventSource reconnects after it, where a 503 would close it
// for good. What is decided without the backend keeps its error status.
func TestStreamOpenedWhileStoreDown(t *testing.T) {
	store := downStore{progress.NewMemoryStore(progress.MemoryConfig{})}
	reg := registry.New()
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{Registry: reg})
	var logs syncbuf.Buffer
	open := ssehttp.New(ssehttp.Config{Queue: unavailableQueue{}, Progress: store, Registry: reg, Retry: 1500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	owned := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg, Retry: 1500 * time.Millisecond,
		Identify: bearerIdentify, Logger: slog.New(slog.DiscardHandler)})
	id := queue.NewID()
	serve := func(h http.Handler, method, path string, headers map[string]string) (*http.Response, string) {
		req := httptest.NewRequest(method, path, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result(), rec.Body.String()
	}

	for _, tc := range []struct {
		name    string
		handler http.Handler
		path    string
		headers map[string]string
	}{
		{"snapshots", open, "/task-status/" + id + "/", nil},
		{"updates", open, "/task-status/" + id + "/?mode=updates", nil},
		{"snapshots without the slash", open, "/task-status/" + id, nil},
		{"after Last-Event-ID", open, "/task-status/" + id + "/", map[string]string{"Last-Event-ID": "1-0"}},
		{"after lastEventId", open, "/task-status/" + id + "/?mode=updates&lastEventId=7", nil},
		{"owner lookup", owned, "/task-status/" + id + "/", map[string]string{"Authorization": "Bearer alice", "Last-Event-ID": "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := serve(tc.handler, "GET", tc.path, tc.headers)
			require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
			assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
			assert.Empty(t, resp.Header.Get("Retry-After"))
			assert.Equal(t, ": task backend unavailable, reconnect in 1.5s\nretry: 1500\n\n", body)
			r := sse.NewReader(strings.NewReader(body))
			m, err := r.Next()
			require.NoError(t, err)
			assert.Equal(t, "1500", m.Retry)
			assert.False(t, m.HasData, "no message for EventSource to dispatch")
			assert.False(t, m.HasID, "the client keeps its Last-Event-ID")
			_, err = r.Next()
			assert.ErrorIs(t, err, io.EOF, "the stream ends")
		})
	}
	assert.Contains(t, logs.String(), "backend unavailable", "the cause is logged")
	assert.Contains(t, logs.String(), "connection refused")

	t.Run("HEAD", func(t *testing.T) {
		resp, body := serve(open, "HEAD", "/task-status/"+id+"/", nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		assert.Empty(t, body)
	})

	// Refusals decided without the backend are unchanged. (With Identify,
	// the owner is looked up before the request's headers are checked.)
	for _, tc := range []struct {
		name    string
		handler http.Handler
		path    string
		headers map[string]string
		status  int
	}{
		{"invalid id", owned, "/task-status/a.b/", nil, 404},
		{"huge Last-Event-ID", open, "/task-status/" + id + "/", map[string]string{"Last-Event-ID": strings.Repeat("1", 300)}, 400},
		{"unknown mode", open, "/task-status/" + id + "/?mode=x", nil, 400},
		{"identify refuses", owned, "/task-status/" + id + "/", map[string]string{"Authorization": "Bearer bad"}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := serve(tc.handler, "GET", tc.path, tc.headers)
			require.Equal(t, tc.status, resp.StatusCode, "body: %s", body)
			errorOf(t, resp, []byte(body))
		})
	}
}

// TestErrorsQuoteInputsBriefly sends inputs far longer than any name or
// value the API knows (a flow name, a key, a query parameter of 10 kB)
// to every route that quotes what it refuses, on both backends: the error
// quotes a short prefix of it, keeps the rest of its message, and stays
// short, so that a client cannot make the server echo up to a body or a
// header's worth of its own bytes.
func TestErrorsQuoteInputsBriefly(t *testing.T) {
	long := strings.Repeat("k", 10_000)
	onEachBackend(t, func(t *testing.T, s *site) {
		type named struct {
			Name string `json:"name"`
		}
		s.reg.MustRegister("typed_flow", flow.Typed(func(context.Context, named, *flow.Task) (string, error) { return "", nil }))
		base := s.serve(t, ssehttp.Config{Inspector: s.insp})
		pending, err := s.broker.Enqueue(context.Background(), "poem_flow", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		tests := []struct {
			name, method, path, body string
			status                   int
			// inError must be in the message: the quote's start, and
			// what follows the quote.
			inError []string
		}{
			{"unknown flow", "POST", "/start-task/", `{"flow":"` + long + `"}`, 404, []string{`unknown flow: "kkk`}},
			{"duplicate key", "POST", "/start-task/", `{"flow":"poem_flow","` + long + `":1,"` + long + `":2}`, 400, []string{`duplicate key "kkk`}},
			{"unknown input", "POST", "/start-task/", `{"flow":"typed_flow","inputs":{"name":"a","` + long + `":1}}`, 422, []string{`field "kkk`, `: is not a known input`}},
			{"duplicate input", "POST", "/start-task/", `{"flow":"poem_flow","inputs":{"` + long + `":1,"` + long + `":2}}`, 422, []string{`"kkk`}},
			{"unknown parameter", "GET", "/tasks/?" + long + "=1", "", 400, []string{`unknown parameter "kkk`, "(want state, "}},
			{"limit", "GET", "/tasks/?limit=" + long, "", 400, []string{`limit "kkk`, "is not an integer from 1 to 1000"}},
			{"since", "GET", "/tasks/?since=" + long, "", 400, []string{`since "kkk`, "is not an RFC 3339 time"}},
			{"cursor", "GET", "/tasks/?cursor=" + long, "", 400, []string{`malformed cursor "kkk`}},
			{"state", "GET", "/tasks/?state=" + long, "", 400, []string{`unknown state "KKK`, "(want PENDING, "}},
			{"state to cancel", "POST", "/cancel-tasks/?state=" + long, "", 400, []string{`state "KKK`, "(want PENDING, PROGRESS or none)"}},
			{"dead limit", "GET", "/dead/?limit=" + long, "", 400, []string{`limit "kkk`}},
			{"resume", "POST", "/dead/" + queue.NewID() + "/requeue/?resume=" + long, "", 400, []string{`resume "kkk`, "is not 1, true, 0 or false"}},
			{"mode", "GET", "/task-status/" + pending + "/?mode=" + long, "", 400, []string{`unknown mode "kkk`, "want snapshots or updates"}},
			{"parameter of stats", "GET", "/stats/?" + long + "=1", "", 400, []string{`unknown parameter "kkk`, "takes none"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				req, err := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
				require.NoError(t, err)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.Equal(t, tc.status, resp.StatusCode, "body: %.300s", body)
				msg := errorOf(t, resp, body)
				for _, want := range tc.inError {
					assert.Contains(t, msg, want)
				}
				assert.LessOrEqual(t, len(body), 400, "body: %.500s", body)
			})
		}
	})
}

// TestLastEventIDHeaderTwice: a Last-Event-ID header given twice is
// refused, as the lastEventId parameter given twice is: which of two ids
// the client meant is not for the server to guess, and either may make
// it miss events or see them twice.
func TestLastEventIDHeaderTwice(t *testing.T) {
	e := newEnv(t, envOptions{})
	finished := e.start(t, "poem_flow")
	e.waitTerminal(t, finished)
	for _, ids := range [][]string{{"1", "2"}, {"2", "2"}, {"", "2"}, {"1", "2", "3"}} {
		req := httptest.NewRequest(http.MethodGet, "/task-status/"+finished+"/", nil)
		for _, id := range ids {
			req.Header.Add("Last-Event-ID", id)
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		resp := rec.Result()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "Last-Event-ID %q: %s", ids, rec.Body)
		assert.Equal(t, fmt.Sprintf("Last-Event-ID given %d times; give it once", len(ids)), errorOf(t, resp, rec.Body.Bytes()))
	}
}
