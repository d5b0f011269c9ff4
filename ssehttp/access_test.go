package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// bearerIdentify names the caller by its bearer token: "op" is an
// operator, any other token names a user of that name, no token is the
// anonymous caller, and "bad" is refused.
func bearerIdentify(r *http.Request) (ssehttp.Principal, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !ok:
		return ssehttp.Principal{}, nil
	case token == "bad":
		return ssehttp.Principal{}, errors.New("invalid token")
	case token == "op":
		return ssehttp.Principal{ID: "op", Operator: true}, nil
	}
	return ssehttp.Principal{ID: token}, nil
}

// as sends a request as user ("" for no token) and reads the answer.
func (e *env) as(t *testing.T, user, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.server.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	return e.do(t, req)
}

// startAs starts a task of flowName as user and returns its id.
func (e *env) startAs(t *testing.T, user, flowName string) string {
	t.Helper()
	resp, body := e.as(t, user, "POST", "/start-task/", `{"flow":"`+flowName+`"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "start-task as %q: %s", user, body)
	var out struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal(body, &out))
	return out.TaskID
}

// TestOwnedTasks checks that a task belongs to the caller that started it:
// its owner and operators may read, watch and cancel it, and everyone else
// gets the very answer an unknown id gets.
func TestOwnedTasks(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{Identify: bearerIdentify}})
	done := e.startAs(t, "alice", "poem_flow")
	e.waitTerminal(t, done)
	running := e.startAs(t, "alice", "gated_flow")
	e.waitStarted(t, running)
	anon := e.startAs(t, "", "poem_flow")
	e.waitTerminal(t, anon)

	info, err := e.broker.Task(t.Context(), done)
	require.NoError(t, err)
	assert.Equal(t, "alice", info.Task.Owner, "the queue record names the owner")
	info, err = e.broker.Task(t.Context(), anon)
	require.NoError(t, err)
	assert.Empty(t, info.Task.Owner, "an anonymous caller's task has no owner")

	unknown := queue.NewID()
	_, notFound := e.as(t, "alice", "GET", "/tasks/"+unknown+"/", "")
	_, notFoundStream := e.as(t, "alice", "GET", "/task-status/"+unknown+"/", "")
	_, notFoundCancel := e.as(t, "alice", "POST", "/cancel-task/"+unknown+"/", "")

	tests := []struct {
		name, user, method, path string
		status                   int
		// like404 is the body of the same route for an unknown id, which
		// a refusal must match byte for byte.
		like404 []byte
	}{
		{"owner reads", "alice", "GET", "/tasks/" + done + "/", 200, nil},
		{"operator reads", "op", "GET", "/tasks/" + done + "/", 200, nil},
		{"other user reads", "bob", "GET", "/tasks/" + done + "/", 404, notFound},
		{"anonymous reads", "", "GET", "/tasks/" + done + "/", 404, notFound},
		{"owner watches", "alice", "GET", "/task-status/" + done + "/", 200, nil},
		{"operator watches", "op", "GET", "/task-status/" + done + "/", 200, nil},
		{"other user watches", "bob", "GET", "/task-status/" + done + "/", 404, notFoundStream},
		{"other user resumes", "bob", "GET", "/task-status/" + done + "/?lastEventId=1", 404, notFoundStream},
		{"other user cancels", "bob", "POST", "/cancel-task/" + running + "/", 404, notFoundCancel},
		{"anonymous cancels", "", "POST", "/cancel-task/" + running + "/", 404, notFoundCancel},
		{"anonymous reads an anonymous task", "", "GET", "/tasks/" + anon + "/", 200, nil},
		{"user reads an anonymous task", "bob", "GET", "/tasks/" + anon + "/", 404, notFound},
		{"operator reads an anonymous task", "op", "GET", "/tasks/" + anon + "/", 200, nil},
		{"refused token on start", "bad", "POST", "/start-task/", 401, nil},
		{"refused token on read", "bad", "GET", "/tasks/" + done + "/", 401, nil},
		{"refused token on watch", "bad", "GET", "/task-status/" + done + "/", 401, nil},
		{"refused token on cancel", "bad", "POST", "/cancel-task/" + done + "/", 401, nil},
		{"refused token on flows", "bad", "GET", "/flows/", 401, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"flow":"poem_flow"}`
			resp, got := e.as(t, tt.user, tt.method, tt.path, body)
			require.Equal(t, tt.status, resp.StatusCode, "%s", got)
			if tt.like404 != nil {
				assert.Equal(t, string(tt.like404), string(got), "a task of another owner is an unknown task")
			}
			if tt.status == 401 {
				assert.Equal(t, "invalid token", errorOf(t, resp, got))
			}
		})
	}

	// Nobody but its owner cancelled it: it still runs, and its owner can.
	snap, _, err := e.store.Snapshot(t.Context(), running)
	require.NoError(t, err)
	assert.Equal(t, progress.StateProgress, snap.State)
	resp, body := e.as(t, "alice", "POST", "/cancel-task/"+running+"/", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	assert.Equal(t, queue.StatusCancelled, e.waitTerminal(t, running).Details.Status)
}

// TestAuthorizeSeesAccess checks what the authorizer is told on every
// route, that it runs after the owner check, and that its refusal is a 403
// with its message.
func TestAuthorizeSeesAccess(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []ssehttp.Access
	)
	authorize := func(r *http.Request, a ssehttp.Access) error {
		mu.Lock()
		seen = append(seen, a)
		mu.Unlock()
		if a.Principal.ID == "carol" {
			return errors.New("carol may not " + string(a.Action))
		}
		return nil
	}
	last := func(t *testing.T) ssehttp.Access {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, seen)
		a := seen[len(seen)-1]
		seen = nil
		return a
	}
	e := newEnv(t, envOptions{config: ssehttp.Config{Identify: bearerIdentify, Authorize: authorize}})
	alice := ssehttp.Principal{ID: "alice"}

	id := e.startAs(t, "alice", "poem_flow")
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionStart, Principal: alice, Flow: "poem_flow"}, last(t))
	e.waitTerminal(t, id)

	for _, r := range []struct {
		method, path string
		action       ssehttp.Action
	}{
		{"GET", "/tasks/" + id + "/", ssehttp.ActionRead},
		{"GET", "/tasks/" + id + "/?wait=1s", ssehttp.ActionWait},
		{"GET", "/task-status/" + id + "/", ssehttp.ActionWatch},
		{"POST", "/cancel-task/" + id + "/", ssehttp.ActionCancel},
	} {
		t.Run(string(r.action), func(t *testing.T) {
			resp, body := e.as(t, "alice", r.method, r.path, "")
			require.Less(t, resp.StatusCode, 500, "%s", body)
			assert.Equal(t, ssehttp.Access{Action: r.action, Principal: alice, Flow: "poem_flow", TaskID: id, Owner: "alice"}, last(t))

			resp, body = e.as(t, "op", r.method, r.path, "")
			require.Less(t, resp.StatusCode, 500, "%s", body)
			assert.Equal(t, ssehttp.Access{Action: r.action, Principal: ssehttp.Principal{ID: "op", Operator: true}, Flow: "poem_flow", TaskID: id, Owner: "alice"}, last(t))

			resp, _ = e.as(t, "bob", r.method, r.path, "")
			assert.Equal(t, http.StatusNotFound, resp.StatusCode)
			mu.Lock()
			assert.Empty(t, seen, "the authorizer is not asked about a task the caller may not see")
			mu.Unlock()
		})
	}

	resp, _ := e.as(t, "alice", "GET", "/flows/", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionFlows, Principal: alice}, last(t))

	resp, body := e.as(t, "carol", "POST", "/start-task/", `{"flow":"poem_flow"}`)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Equal(t, "carol may not start", errorOf(t, resp, body))
	assert.Equal(t, "poem_flow", last(t).Flow, "the authorizer knows the flow asked for")
}

// TestOpenHandler checks the API without Identify: every caller may use
// every task, and the authorizer sees an anonymous operator.
func TestOpenHandler(t *testing.T) {
	var got []ssehttp.Access
	var mu sync.Mutex
	e := newEnv(t, envOptions{config: ssehttp.Config{Authorize: func(r *http.Request, a ssehttp.Access) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, a)
		return nil
	}}})
	id := e.startAs(t, "alice", "poem_flow")
	e.waitTerminal(t, id)
	resp, body := e.as(t, "bob", "GET", "/tasks/"+id+"/", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionStart, Principal: ssehttp.Principal{Operator: true}, Flow: "poem_flow"}, got[0])
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionRead, Principal: ssehttp.Principal{Operator: true}, Flow: "poem_flow", TaskID: id}, got[1])
}

// plainQueue is a Queue that cannot tell a task's owner.
type plainQueue struct{ acceptingQueue }

func TestIdentifyNeedsTaskInspector(t *testing.T) {
	assert.PanicsWithValue(t, "ssehttp.New: Config.Identify needs a Queue that is a TaskInspector, to find the owner of a task", func() {
		ssehttp.New(ssehttp.Config{Queue: plainQueue{}, Progress: progress.NewMemoryStore(progress.MemoryConfig{}), Registry: registry.New(),
			Identify: bearerIdentify})
	})
}

// inspectorOnly is a Queue that reads a task's record only through
// TaskInspector.Task (with the snapshot), as a wrapper of *queue.Broker
// that forwards Task but not Record would.
type inspectorOnly struct{ acceptingQueue }

func (inspectorOnly) Task(context.Context, string) (*queue.TaskInfo, error) {
	return nil, queue.ErrNotFound
}

// TestIdentifyWithoutRecordReaderWarns: with Identify, a Queue that is a
// TaskInspector but no TaskRecordReader makes each stream's owner check
// read the task's whole snapshot; New says so once, naming the type,
// rather than leave a wrapper to lose the cheap check silently. A Queue
// that reads records alone gets no warning.
func TestIdentifyWithoutRecordReaderWarns(t *testing.T) {
	newWith := func(q ssehttp.Queue) string {
		var log strings.Builder
		ssehttp.New(ssehttp.Config{Queue: q, Progress: progress.NewMemoryStore(progress.MemoryConfig{}), Registry: registry.New(),
			Identify: bearerIdentify, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		return log.String()
	}
	logged := newWith(inspectorOnly{})
	assert.Contains(t, logged, "level=WARN")
	assert.Contains(t, logged, "TaskRecordReader")
	assert.Contains(t, logged, "ssehttp_test.inspectorOnly")

	mem := queue.NewMemory(queue.MemoryConfig{})
	broker := queue.NewBroker(mem, progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{Registry: registry.New()})
	assert.Empty(t, newWith(broker), "a *queue.Broker reads records alone")
}

// TestIdentifyRefusal checks that a caller Identify refuses gets 401 with
// the error's text as the message.
func TestIdentifyRefusal(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	h := ssehttp.New(ssehttp.Config{Queue: queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{}),
		Progress: store, Registry: registry.New(), Identify: bearerIdentify})
	req := httptest.NewRequestWithContext(context.Background(), "GET", "/flows/", nil)
	req.Header.Set("Authorization", "Bearer bad")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.JSONEq(t, `{"error":"invalid token"}`, rec.Body.String())
}

// TestInternalOwnerIsNoCaller checks that a task owned by
// queue.InternalOwner is the operators' only, and that Identify cannot
// name a caller so: the request is refused, 401.
func TestInternalOwnerIsNoCaller(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{Identify: bearerIdentify}})
	id, err := e.broker.Enqueue(t.Context(), "gated_flow", nil, queue.EnqueueOptions{Owner: queue.InternalOwner})
	require.NoError(t, err)
	e.waitStarted(t, id)
	for _, user := range []string{"alice", "", queue.InternalOwner} {
		want := http.StatusNotFound
		if user == queue.InternalOwner {
			want = http.StatusUnauthorized
		}
		resp, body := e.as(t, user, "GET", "/tasks/"+id+"/", "")
		assert.Equal(t, want, resp.StatusCode, "read as %q: %s", user, body)
		resp, body = e.as(t, user, "POST", "/cancel-task/"+id+"/", "")
		assert.Equal(t, want, resp.StatusCode, "cancel as %q: %s", user, body)
	}
	resp, body := e.as(t, queue.InternalOwner, "POST", "/start-task/", `{"flow":"poem_flow"}`)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s", body)
	assert.Equal(t, `caller id "flows:internal" is reserved`, errorOf(t, resp, body))

	resp, body = e.as(t, "op", "GET", "/tasks/"+id+"/", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	resp, body = e.as(t, "op", "POST", "/cancel-task/"+id+"/", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	assert.Equal(t, queue.StatusCancelled, e.waitTerminal(t, id).Details.Status)
}

// TestNewNamesTheNegativeField: a negative limit or duration in Config
// makes New panic with a message that names the field and its value, so
// that a misread flag is found at once.
func TestNewNamesTheNegativeField(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	for _, tc := range []struct {
		cfg  ssehttp.Config
		want string
	}{
		{ssehttp.Config{MaxBodyBytes: -1}, "ssehttp.New: Config.MaxBodyBytes -1 is negative (zero means the default)"},
		{ssehttp.Config{Heartbeat: -time.Second}, "ssehttp.New: Config.Heartbeat -1s is negative (zero means the default)"},
		{ssehttp.Config{Retry: -time.Second}, "ssehttp.New: Config.Retry -1s is negative (zero means the default)"},
		{ssehttp.Config{WriteTimeout: -time.Second}, "ssehttp.New: Config.WriteTimeout -1s is negative (zero means the default)"},
		{ssehttp.Config{BodyTimeout: -time.Second}, "ssehttp.New: Config.BodyTimeout -1s is negative (zero means the default)"},
		{ssehttp.Config{MaxWait: -time.Second}, "ssehttp.New: Config.MaxWait -1s is negative (zero means the default)"},
		{ssehttp.Config{MaxStreamsPerCaller: -1}, "ssehttp.New: Config.MaxStreamsPerCaller -1 is negative (zero means no cap)"},
	} {
		tc.cfg.Queue, tc.cfg.Progress, tc.cfg.Registry = plainQueue{}, store, registry.New()
		assert.PanicsWithValue(t, tc.want, func() { ssehttp.New(tc.cfg) })
	}
}
