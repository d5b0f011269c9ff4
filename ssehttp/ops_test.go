package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// registerBroken adds broken_flow, which fails for good on its first run.
func registerBroken(reg *registry.Registry) {
	reg.MustRegister("broken_flow", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, flow.Permanent(errors.New("the model refused"))
	}))
}

// decode decodes a JSON body into v, refusing fields v does not have.
func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), "body: %s", body)
}

// listPage is the body of GET /tasks/.
type listPage struct {
	Tasks []struct {
		TaskID       string    `json:"task_id"`
		Flow         string    `json:"flow"`
		State        string    `json:"state"`
		Progress     int       `json:"progress"`
		Status       string    `json:"status"`
		Attempt      int       `json:"attempt"`
		MaxAttempts  int       `json:"max_attempts"`
		HandBacks    int       `json:"hand_backs"`
		Owner        string    `json:"owner"`
		RequeuedFrom string    `json:"requeued_from"`
		Cancelled    bool      `json:"cancelled"`
		EnqueuedAt   time.Time `json:"enqueued_at"`
		StartedAt    time.Time `json:"started_at"`
		EndedAt      time.Time `json:"ended_at"`
	} `json:"tasks"`
	NextCursor string `json:"next_cursor"`
}

func (p listPage) ids() []string {
	var ids []string
	for _, t := range p.Tasks {
		ids = append(ids, t.TaskID)
	}
	return ids
}

func (e *env) list(t *testing.T, query string) listPage {
	t.Helper()
	resp, body := e.get(t, "/tasks/?"+query)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET /tasks/?%s: %s", query, body)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var p listPage
	decode(t, body, &p)
	return p
}

// leaseQueue is a handler on a Memory queue whose flow "f" the test
// leases and gives back by hand, for what the listing and GET
// /tasks/{id}/ then tell.
type leaseQueue struct {
	backend *queue.Memory
	broker  *queue.Broker
	h       http.Handler
}

func newLeaseQueue(t *testing.T) *leaseQueue {
	t.Helper()
	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	reg := registry.New()
	reg.MustRegister("f", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
	h := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg,
		Inspector: queue.NewInspector(backend, store, queue.InspectorConfig{Logger: slog.New(slog.DiscardHandler)})})
	return &leaseQueue{backend: backend, broker: broker, h: h}
}

// fetch leases the one task ready.
func (q *leaseQueue) fetch(t *testing.T) *queue.Lease {
	t.Helper()
	leases, err := q.backend.Fetch(t.Context(), "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

// get answers GET path with 200 and decodes its JSON into v.
func (q *leaseQueue) get(t *testing.T, path string, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	q.h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	require.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
	decode(t, rec.Body.Bytes(), v)
}

// TestHandBacksShown checks that the listing and GET /tasks/{id}/ tell
// a task's hand-backs (runs handed back through no fault of its flow,
// which do not count) apart from its attempts.
func TestHandBacksShown(t *testing.T) {
	q := newLeaseQueue(t)
	ctx := t.Context()
	id, err := q.broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{MaxAttempts: 2})
	require.NoError(t, err)
	// Two runs handed back (a shutdown, the store down), the third held.
	for _, why := range []queue.AttemptEnd{queue.EndShutdown, queue.EndStoreDown, ""} {
		l := q.fetch(t)
		if why != "" {
			require.NoError(t, q.backend.Retry(ctx, l, time.Now(), why))
		}
	}

	var page listPage
	q.get(t, "/tasks/", &page)
	require.Len(t, page.Tasks, 1)
	assert.Equal(t, 3, page.Tasks[0].Attempt)
	assert.Equal(t, 2, page.Tasks[0].MaxAttempts)
	assert.Equal(t, 2, page.Tasks[0].HandBacks)

	var task map[string]json.RawMessage
	q.get(t, "/tasks/"+id+"/", &task)
	assert.JSONEq(t, `3`, string(task["attempt"]))
	assert.JSONEq(t, `2`, string(task["max_attempts"]))
	assert.JSONEq(t, `2`, string(task["hand_backs"]))
}

// TestHookReRunsShown checks that the listing and GET /tasks/{id}/ count
// the same runs of a task's flow, the leases that only ran its finish
// hooks again (queue.ErrRetryHooks) left out: while it waits to run
// them again, and while a lease runs them.
func TestHookReRunsShown(t *testing.T) {
	q := newLeaseQueue(t)
	ctx := t.Context()
	// Each task runs its flow twice (the first run fails), then has its
	// hooks run again five times; the last give-back of "waits" is for
	// an hour.
	ids := map[string]string{}
	for _, name := range []string{"waits", "runs hooks"} {
		id, err := q.broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{MaxAttempts: 3})
		require.NoError(t, err)
		ids[name] = id
		require.NoError(t, q.backend.Retry(ctx, q.fetch(t), time.Now(), queue.EndFailed))
		l := q.fetch(t)
		for i := range 5 {
			at := time.Now()
			if name == "waits" && i == 4 {
				at = at.Add(time.Hour)
			}
			require.NoError(t, q.backend.Retry(ctx, l, at, queue.EndHooksPending))
			if at.After(time.Now()) {
				break
			}
			l = q.fetch(t)
		}
	}

	var page listPage
	q.get(t, "/tasks/", &page)
	require.Len(t, page.Tasks, 2)
	listed := map[string]int{}
	for _, s := range page.Tasks {
		listed[s.TaskID] = s.Attempt
	}
	for name, id := range ids {
		assert.Equal(t, 2, listed[id], "%s: the listing", name)
		var task map[string]json.RawMessage
		q.get(t, "/tasks/"+id+"/", &task)
		assert.JSONEq(t, `2`, string(task["attempt"]), "%s: GET /tasks/{id}/", name)
		assert.JSONEq(t, `3`, string(task["max_attempts"]), name)
	}
}

// TestOperatorRoutes runs every operators' route against tasks in every
// state and checks the JSON they answer.
func TestOperatorRoutes(t *testing.T) {
	e := newEnv(t, envOptions{register: registerBroken})
	done := e.start(t, "poem_flow")
	e.waitTerminal(t, done)
	broken := e.start(t, "broken_flow")
	e.waitTerminal(t, broken)
	// The worker buries the task after it recorded its end.
	require.Eventually(t, func() bool {
		dead, err := e.broker.Dead(context.Background(), 0)
		return err == nil && len(dead) == 1
	}, testTimeout, 2*time.Millisecond, "the broken task was not buried")
	time.Sleep(3 * time.Millisecond) // the order is to the millisecond
	running := e.start(t, "gated_flow")
	e.waitStarted(t, running)

	all := e.list(t, "")
	assert.ElementsMatch(t, []string{done, broken, running}, all.ids())
	assert.Empty(t, all.NextCursor)
	assert.Equal(t, running, all.Tasks[0].TaskID, "the task that started last comes first")
	byID := map[string]int{}
	for i, task := range all.Tasks {
		byID[task.TaskID] = i
	}
	d := all.Tasks[byID[done]]
	assert.Equal(t, "poem_flow", d.Flow)
	assert.Equal(t, "SUCCESS", d.State)
	assert.Equal(t, 100, d.Progress)
	assert.Equal(t, 1, d.Attempt)
	assert.False(t, d.EnqueuedAt.IsZero() || d.StartedAt.IsZero() || d.EndedAt.IsZero(), "times of a finished task: %+v", d)
	b := all.Tasks[byID[broken]]
	assert.Equal(t, "FAILURE", b.State)
	assert.Equal(t, "the model refused", b.Status)
	r := all.Tasks[byID[running]]
	assert.Equal(t, "PROGRESS", r.State)
	assert.True(t, r.EndedAt.IsZero())

	assert.Equal(t, []string{done}, e.list(t, "state=SUCCESS").ids())
	assert.Equal(t, []string{broken}, e.list(t, "state=failure").ids(), "a state in any case")
	assert.Equal(t, []string{running}, e.list(t, "flow=gated_flow").ids())
	assert.Empty(t, e.list(t, "flow=gated_flow&state=SUCCESS").Tasks)

	// Paging one at a time gives the same tasks in the same order.
	var paged []string
	cursor := ""
	for range 10 {
		p := e.list(t, "limit=1&cursor="+url.QueryEscape(cursor))
		require.LessOrEqual(t, len(p.Tasks), 1)
		paged = append(paged, p.ids()...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	assert.Equal(t, all.ids(), paged)

	resp, body := e.get(t, "/stats/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var st struct {
		At     time.Time         `json:"at"`
		Counts map[string]int64  `json:"counts"`
		Flows  []json.RawMessage `json:"flows"`
		Ready  int64             `json:"ready"`
		Delay  int64             `json:"delayed"`
		Run    int64             `json:"running"`
		Hooks  int64             `json:"hooks_waiting"`
		Dead   int64             `json:"dead"`
		Last   struct {
			Window    float64        `json:"window_seconds"`
			Succeeded int64          `json:"succeeded"`
			Failed    int64          `json:"failed"`
			PerSecond float64        `json:"per_second"`
			Wait      map[string]any `json:"wait"`
			Run       map[string]any `json:"run"`
			Sampled   int            `json:"sampled"`
		} `json:"last_minute"`
		Workers []struct {
			Name        string    `json:"name"`
			Host        string    `json:"host"`
			PID         int       `json:"pid"`
			Slots       int       `json:"slots"`
			Running     int       `json:"running"`
			StartedAt   time.Time `json:"started_at"`
			HeartbeatMS int64     `json:"heartbeat_ms"`
			LeaseMS     int64     `json:"lease_ms"`
			LastSeen    time.Time `json:"last_seen"`
			Alive       bool      `json:"alive"`
		} `json:"workers"`
		OldestReady time.Time `json:"oldest_ready"`
	}
	decode(t, body, &st)
	assert.Equal(t, map[string]int64{"PENDING": 0, "PROGRESS": 1, "SUCCESS": 1, "FAILURE": 1}, st.Counts)
	assert.Len(t, st.Flows, 3)
	assert.Equal(t, int64(1), st.Run)
	assert.Equal(t, int64(1), st.Dead)
	assert.Equal(t, 60.0, st.Last.Window)
	assert.Equal(t, int64(1), st.Last.Succeeded)
	assert.Equal(t, int64(1), st.Last.Failed)
	assert.Contains(t, st.Last.Run, "p50_ms")
	require.Len(t, st.Workers, 1)
	assert.True(t, st.Workers[0].Alive)
	assert.Equal(t, 8, st.Workers[0].Slots)
	assert.Equal(t, int64(queue.DefaultHeartbeat/time.Millisecond), st.Workers[0].HeartbeatMS)

	resp, body = e.get(t, "/dead/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var dead struct {
		Tasks []struct {
			TaskID   string    `json:"task_id"`
			Flow     string    `json:"flow"`
			Reason   string    `json:"reason"`
			Attempts int       `json:"attempts"`
			BuriedAt time.Time `json:"buried_at"`
		} `json:"tasks"`
	}
	decode(t, body, &dead)
	require.Len(t, dead.Tasks, 1)
	assert.Equal(t, broken, dead.Tasks[0].TaskID)
	assert.Equal(t, "the model refused", dead.Tasks[0].Reason)

	resp, body = e.post(t, "/dead/"+broken+"/requeue/", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	var requeued struct {
		TaskID       string `json:"task_id"`
		RequeuedFrom string `json:"requeued_from"`
	}
	decode(t, body, &requeued)
	assert.Equal(t, broken, requeued.RequeuedFrom)
	assert.NotEqual(t, broken, requeued.TaskID)
	e.waitTerminal(t, requeued.TaskID)
	resp, body = e.post(t, "/dead/"+broken+"/requeue/", "")
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "a second requeue: %s", body)
	assert.Equal(t, "task is not in the dead-letter set", errorOf(t, resp, body))
	resp, body = e.post(t, "/dead/"+queue.NewID()+"/requeue/", "")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s", body)
	resp, body = e.post(t, "/dead/"+done+"/requeue/", "")
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "a task that succeeded: %s", body)

	resp, body = e.post(t, "/cancel-tasks/?flow=gated_flow", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	var cancelled struct {
		Cancelled []string `json:"cancelled"`
		More      bool     `json:"more"`
	}
	decode(t, body, &cancelled)
	assert.Equal(t, []string{running}, cancelled.Cancelled)
	assert.False(t, cancelled.More)
	snap := e.waitTerminal(t, running)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
}

// TestOperatorRoutesBadInput checks that what the routes cannot run is
// answered 400 with a message, and changes nothing.
func TestOperatorRoutesBadInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	e.waitTerminal(t, id)
	for _, tc := range []struct {
		method, path, want string
	}{
		{"GET", "/tasks/?state=DONE", `unknown state "DONE"`},
		{"GET", "/tasks/?limit=0", `limit "0" is not an integer from 1 to 1000`},
		{"GET", "/tasks/?limit=1001", `limit "1001"`},
		{"GET", "/tasks/?limit=-3", `limit "-3"`},
		{"GET", "/tasks/?limit=ten", `limit "ten"`},
		{"GET", "/tasks/?cursor=bogus", `malformed cursor "bogus"`},
		{"GET", "/tasks/?cursor=12.x%20y", "malformed cursor"},
		{"GET", "/tasks/?cursor=h.zz", "malformed cursor"},
		// A cursor that decodes but that no listing issues: a time past
		// the year 9999, which no task has (JSON times end there), or
		// an earlier version's cursor into the history.
		{"GET", "/tasks/?cursor=253402300800000.abc", `cursor "253402300800000.abc" is past the year 9999, where no task is listed`},
		{"GET", "/tasks/?cursor=9223372036854775807.abc", "past the year 9999"},
		{"GET", "/tasks/?cursor=h.1796622488530.", `cursor "h.1796622488530." was issued by an earlier version of flows`},
		{"POST", "/cancel-tasks/?owner=a&cursor=PENDING:253402300800000.abc", "past the year 9999"},
		{"GET", "/tasks/?stat=SUCCESS", `unknown parameter "stat"`},
		{"GET", "/tasks/?flow=a&flow=b", `parameter "flow" given more than once`},
		{"GET", "/tasks/?%zz", "malformed query string"},
		{"GET", "/tasks/?since=yesterday", `since "yesterday" is not an RFC 3339 time`},
		{"GET", "/tasks/?until=2026-13-01T00:00:00Z", `until "2026-13-01T00:00:00Z" is not an RFC 3339 time`},
		{"GET", "/tasks/?since=2026-12-06", `since "2026-12-06" is not an RFC 3339 time`},
		// An offset's + written as is in a URL reads as a space.
		{"GET", "/tasks/?since=2026-12-06T06:00:00+01:00", `since "2026-12-06T06:00:00 01:00" is not an RFC 3339 time (like 2026-12-06T05:00:00Z; a + in a URL reads as a space: write it %2B)`},
		{"POST", "/cancel-tasks/?owner=a&until=2026-12-06T06:00:00.5+01:00", `write it %2B`},
		{"GET", "/tasks/?since=2026-12-06T06:00:00Z&until=2026-12-06T05:00:00Z", "until 2026-12-06T05:00:00Z is before since 2026-12-06T06:00:00Z"},
		{"GET", "/tasks/?owner=a&owner=b", `parameter "owner" given more than once`},
		{"GET", "/stats/?verbose=1", `unknown parameter "verbose"`},
		{"GET", "/dead/?limit=5000", `limit "5000"`},
		{"POST", "/cancel-tasks/", "name a state"},
		{"POST", "/cancel-tasks/?owner=", "name a state"},
		{"POST", "/cancel-tasks/?owner=a&since=soon", `since "soon" is not an RFC 3339 time`},
		{"POST", "/cancel-tasks/?until=2026-12-06", `until "2026-12-06" is not an RFC 3339 time`},
		{"POST", "/cancel-tasks/?since=2026-12-06T06:00:00Z&until=2026-12-06T05:00:00Z", "until 2026-12-06T05:00:00Z is before since 2026-12-06T06:00:00Z"},
		{"POST", "/cancel-tasks/?owner=a&cursor=bogus", `malformed cursor "bogus"`},
		{"POST", "/cancel-tasks/?owner=a&owner=b", `parameter "owner" given more than once`},
		{"POST", "/cancel-tasks/?state=SUCCESS", `cannot cancel tasks in state "SUCCESS"`},
		{"POST", "/cancel-tasks/?state=PENDING&limit=0", `limit "0"`},
		{"POST", "/dead/" + id + "/requeue/?now=1", `unknown parameter "now"`},
		{"POST", "/dead/" + id + "/requeue/?resume=yes", `resume "yes" is not 1, true, 0 or false`},
		{"POST", "/dead/" + id + "/requeue/?resume=1&resume=0", `parameter "resume" given more than once`},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var resp *http.Response
			var body []byte
			if tc.method == "GET" {
				resp, body = e.get(t, tc.path)
			} else {
				resp, body = e.post(t, tc.path, "")
			}
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s", body)
			assert.Contains(t, errorOf(t, resp, body), tc.want)
		})
	}
	assert.Equal(t, []string{id}, e.list(t, "").ids(), "nothing changed")
	resp, body := e.get(t, "/tasks/"+id+"/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the task route is still the task's: %s", body)
	resp, body = e.post(t, "/tasks/", "")
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s", body)
}

// TestListByOwnerAndTime checks GET /tasks/?owner=&since=&until=: the
// tasks of one owner, those that entered their state in [since, until),
// and the owner filter shown to the authorizer.
func TestListByOwnerAndTime(t *testing.T) {
	var mu sync.Mutex
	var seen []ssehttp.Access
	e := newEnv(t, envOptions{config: ssehttp.Config{
		Identify: bearerIdentify,
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, a)
			return nil
		},
	}})
	var ids []string
	for _, user := range []string{"ada", "bob", "ada", "bob"} {
		time.Sleep(3 * time.Millisecond) // the order is to the millisecond
		id := e.startAs(t, user, "poem_flow")
		e.waitTerminal(t, id)
		ids = append(ids, id)
	}
	list := func(query string) listPage {
		t.Helper()
		resp, body := e.as(t, "op", "GET", "/tasks/?"+query, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, "GET /tasks/?%s: %s", query, body)
		var p listPage
		decode(t, body, &p)
		return p
	}
	all := list("")
	require.Equal(t, []string{ids[3], ids[2], ids[1], ids[0]}, all.ids())
	endOf := func(i int) string { return all.Tasks[i].EndedAt.UTC().Format(time.RFC3339Nano) }

	mu.Lock()
	seen = nil
	mu.Unlock()
	p := list("owner=ada")
	assert.Equal(t, []string{ids[2], ids[0]}, p.ids())
	for _, task := range p.Tasks {
		assert.Equal(t, "ada", task.Owner)
	}
	mu.Lock()
	require.Len(t, seen, 1)
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionList, Principal: ssehttp.Principal{ID: "op", Operator: true}, Owner: "ada"}, seen[0])
	mu.Unlock()

	// all.Tasks[i] is ids[3-i]: since the end of ids[1], until that of
	// ids[3]: ids[1] and ids[2].
	q := url.Values{"since": {endOf(2)}, "until": {endOf(0)}}
	assert.Equal(t, []string{ids[2], ids[1]}, list(q.Encode()).ids())
	q.Set("owner", "bob")
	assert.Equal(t, []string{ids[1]}, list(q.Encode()).ids())
	q.Set("limit", "1")
	q.Del("owner")
	p = list(q.Encode())
	assert.Equal(t, []string{ids[2]}, p.ids())
	require.NotEmpty(t, p.NextCursor)
	q.Set("cursor", p.NextCursor)
	assert.Equal(t, []string{ids[1]}, list(q.Encode()).ids())
	assert.Empty(t, list("owner=nobody").ids())
	// An RFC 3339 time with an offset names the same instant.
	assert.Equal(t, []string{ids[3]}, list(url.Values{"since": {all.Tasks[0].EndedAt.In(time.FixedZone("", 5*3600)).Format(time.RFC3339Nano)}}.Encode()).ids())
}

// TestCancelByOwnerAndTime checks POST /cancel-tasks/?owner=&since=&until=:
// the running tasks of one owner, those in a time range, a call that goes
// on from the next of the one before, and the owner filter shown to the
// authorizer.
func TestCancelByOwnerAndTime(t *testing.T) {
	var mu sync.Mutex
	var seen []ssehttp.Access
	e := newEnv(t, envOptions{config: ssehttp.Config{
		Identify: bearerIdentify,
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, a)
			return nil
		},
	}})
	var ids []string
	for _, user := range []string{"ada", "bob", "ada", "bob"} {
		time.Sleep(3 * time.Millisecond) // the order is to the millisecond
		id := e.startAs(t, user, "gated_flow")
		e.waitStarted(t, id)
		ids = append(ids, id)
	}
	type result struct {
		Cancelled []string `json:"cancelled"`
		More      bool     `json:"more"`
		Next      string   `json:"next"`
	}
	cancel := func(q url.Values) result {
		t.Helper()
		resp, body := e.as(t, "op", "POST", "/cancel-tasks/?"+q.Encode(), "")
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "POST /cancel-tasks/?%s: %s", q.Encode(), body)
		var r result
		decode(t, body, &r)
		return r
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	assert.Equal(t, result{Cancelled: []string{}}, cancel(url.Values{"owner": {"ada"}, "since": {future}}))
	assert.Equal(t, result{Cancelled: []string{}}, cancel(url.Values{"owner": {"nobody"}}))

	mu.Lock()
	seen = nil
	mu.Unlock()
	r := cancel(url.Values{"owner": {"ada"}})
	assert.Equal(t, result{Cancelled: []string{ids[2], ids[0]}}, r)
	mu.Lock()
	require.Len(t, seen, 1)
	assert.Equal(t, ssehttp.Access{Action: ssehttp.ActionCancelMany, Principal: ssehttp.Principal{ID: "op", Operator: true}, Owner: "ada"}, seen[0])
	mu.Unlock()
	for _, id := range []string{ids[0], ids[2]} {
		snap := e.waitTerminal(t, id)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status, "task %s of ada", id)
	}

	// Bob's, one a call, by a range that holds them: the first call has
	// more, the second goes on from its next.
	q := url.Values{"until": {future}, "state": {"progress"}, "flow": {"gated_flow"}, "owner": {"bob"}, "limit": {"1"}}
	r = cancel(q)
	assert.Equal(t, []string{ids[3]}, r.Cancelled)
	require.True(t, r.More)
	require.NotEmpty(t, r.Next)
	q.Set("cursor", r.Next)
	assert.Equal(t, result{Cancelled: []string{ids[1]}}, cancel(q))
	for _, id := range []string{ids[1], ids[3]} {
		assert.Equal(t, queue.StatusCancelled, e.waitTerminal(t, id).Details.Status, "task %s of bob", id)
	}
}

// TestOperatorRoutesAreForOperators checks who may use the operators'
// routes: operators only, each route under its own action.
func TestOperatorRoutesAreForOperators(t *testing.T) {
	var mu sync.Mutex
	var seen []ssehttp.Access
	e := newEnv(t, envOptions{config: ssehttp.Config{
		Identify: bearerIdentify,
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
			if a.Action == ssehttp.ActionCancelMany || a.Action == ssehttp.ActionRequeue {
				if a.Principal.ID != "op" {
					return errors.New("this operator may only look")
				}
			}
			return nil
		},
	}})
	mine := e.startAs(t, "ada", "poem_flow")
	e.waitTerminal(t, mine)
	routes := []struct {
		method, path string
		action       ssehttp.Action
	}{
		{"GET", "/tasks/?flow=poem_flow", ssehttp.ActionList},
		{"GET", "/stats/", ssehttp.ActionStats},
		{"GET", "/dead/", ssehttp.ActionDead},
		{"POST", "/dead/" + mine + "/requeue/", ssehttp.ActionRequeue},
		{"POST", "/cancel-tasks/?flow=poem_flow", ssehttp.ActionCancelMany},
	}
	for _, r := range routes {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			for _, user := range []string{"", "ada"} {
				resp, body := e.as(t, user, r.method, r.path, "")
				assert.Equal(t, http.StatusForbidden, resp.StatusCode, "as %q: %s", user, body)
				assert.Equal(t, "operators only", errorOf(t, resp, body))
			}
			resp, body := e.as(t, "bad", r.method, r.path, "")
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s", body)

			mu.Lock()
			seen = nil
			mu.Unlock()
			resp, body = e.as(t, "op", r.method, r.path, "")
			assert.Less(t, resp.StatusCode, 500, "%s", body)
			assert.NotEqual(t, http.StatusForbidden, resp.StatusCode, "%s", body)
			mu.Lock()
			require.Len(t, seen, 1)
			a := seen[0]
			mu.Unlock()
			assert.Equal(t, r.action, a.Action)
			assert.Equal(t, ssehttp.Principal{ID: "op", Operator: true}, a.Principal)
		})
	}

	// An operator whom Authorize lets only look.
	e2 := newEnv(t, envOptions{config: ssehttp.Config{
		Identify: func(r *http.Request) (ssehttp.Principal, error) {
			return ssehttp.Principal{ID: "viewer", Operator: true}, nil
		},
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			switch a.Action {
			case ssehttp.ActionList, ssehttp.ActionStats, ssehttp.ActionDead, ssehttp.ActionRead:
				return nil
			}
			return fmt.Errorf("%s is not for viewers", a.Action)
		},
	}})
	resp, body := e2.get(t, "/stats/")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	resp, body = e2.post(t, "/cancel-tasks/?state=PENDING", "")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s", body)
	assert.Equal(t, "cancel-many is not for viewers", errorOf(t, resp, body))
}

// TestOperatorRoutesNeedAnInspector checks that without
// Config.Inspector the routes are not there.
func TestOperatorRoutesNeedAnInspector(t *testing.T) {
	e := newEnv(t, envOptions{noInspector: true})
	for _, path := range []string{"/tasks/", "/stats/", "/dead/"} {
		resp, body := e.get(t, path)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s: %s", path, body)
	}
	resp, body := e.post(t, "/cancel-tasks/?state=PENDING", "")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "%s", body)
}

// downInspector is an Inspector whose backend cannot be reached.
type downInspector struct{}

var errDown = fmt.Errorf("redis at 10.0.0.1:6379: %w", queue.ErrUnavailable)

func (downInspector) List(context.Context, queue.ListOptions) (queue.TaskPage, error) {
	return queue.TaskPage{}, errDown
}
func (downInspector) Stats(context.Context) (queue.Stats, error) { return queue.Stats{}, errDown }
func (downInspector) Dead(context.Context, int) ([]queue.DeadTask, error) {
	return nil, errDown
}
func (downInspector) RequeueWith(context.Context, string, queue.RequeueOptions) (string, error) {
	return "", errDown
}
func (downInspector) CancelMatching(context.Context, queue.CancelFilter) (queue.CancelResult, error) {
	return queue.CancelResult{}, errDown
}

// askedInspector answers a cancellation by filter with one task
// cancelled and one found asked to stop before.
type askedInspector struct{ downInspector }

func (askedInspector) CancelMatching(context.Context, queue.CancelFilter) (queue.CancelResult, error) {
	return queue.CancelResult{Cancelled: []string{"c0ffee"}, AlreadyCancelled: []string{"decaf"}}, nil
}

// TestCancelTasksAlreadyCancelled checks the name on the wire of the
// tasks a cancellation by filter found asked to stop before.
func TestCancelTasksAlreadyCancelled(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{Inspector: askedInspector{}}})
	resp, body := e.post(t, "/cancel-tasks/?state=PROGRESS", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	assert.JSONEq(t, `{"cancelled": ["c0ffee"], "already_cancelled": ["decaf"], "more": false}`, string(body))
}

// TestOperatorRoutesBackendDown checks that a backend that cannot be
// reached is a 503 with Retry-After, on every operators' route, and that
// its address stays out of the answer.
func TestOperatorRoutesBackendDown(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{Inspector: downInspector{}}})
	for _, r := range []struct{ method, path string }{
		{"GET", "/tasks/"}, {"GET", "/stats/"}, {"GET", "/dead/"},
		{"POST", "/dead/" + queue.NewID() + "/requeue/"}, {"POST", "/cancel-tasks/?state=PENDING"},
	} {
		resp, body := e.as(t, "", r.method, r.path, "")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s %s: %s", r.method, r.path, body)
		assert.NotEmpty(t, resp.Header.Get("Retry-After"))
		assert.NotContains(t, string(body), "10.0.0.1")
	}
}

// TestOperatorPostsAreSameOrigin checks that a cross-site page cannot
// make an operator's browser cancel or re-queue tasks.
func TestOperatorPostsAreSameOrigin(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	for _, path := range []string{"/cancel-tasks/?state=PROGRESS", "/dead/" + id + "/requeue/"} {
		req, err := http.NewRequest(http.MethodPost, e.server.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, body := e.do(t, req)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s: %s", path, body)
	}
	assert.Equal(t, "PROGRESS", e.list(t, "").Tasks[0].State, "nothing was cancelled")
	e.release(t, 5)
	e.waitTerminal(t, id)
}

// TestRequeueResume checks POST /dead/{id}/requeue/?resume=1: the new
// task resumes the dead one, replaying the step it completed, where a
// plain requeue runs it again.
func TestRequeueResume(t *testing.T) {
	var searches atomic.Int32
	var fixed atomic.Bool
	e := newEnv(t, envOptions{register: func(reg *registry.Registry) {
		reg.MustRegister("research", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			hits, err := flow.Step(ctx, ft, "search", func(context.Context) (string, error) {
				searches.Add(1)
				return "hits", nil
			})
			if err != nil || !fixed.Load() {
				return nil, flow.Permanent(errors.New("the model refused"))
			}
			return hits, nil
		}))
	}})
	resumed, plain := e.start(t, "research"), e.start(t, "research")
	e.waitTerminal(t, resumed)
	e.waitTerminal(t, plain)
	require.Eventually(t, func() bool {
		dead, err := e.broker.Dead(context.Background(), 0)
		return err == nil && len(dead) == 2
	}, testTimeout, 2*time.Millisecond, "the tasks were not buried")
	require.Equal(t, int32(2), searches.Load())
	fixed.Store(true)

	var requeued struct {
		TaskID       string `json:"task_id"`
		RequeuedFrom string `json:"requeued_from"`
		Resume       bool   `json:"resume"`
	}
	resp, body := e.post(t, "/dead/"+resumed+"/requeue/?resume=1", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	decode(t, body, &requeued)
	assert.Equal(t, resumed, requeued.RequeuedFrom)
	assert.True(t, requeued.Resume)
	snap := e.waitTerminal(t, requeued.TaskID)
	require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, int32(2), searches.Load(), "the dead task's step was replayed")
	var logs []string
	for _, s := range snap.Details.StepResults {
		logs = append(logs, s.Message)
	}
	assert.Equal(t, []string{"re-queued from task " + resumed + ", resuming its completed steps", "search: replayed from task " + resumed}, logs)
	var page struct {
		Tasks []map[string]json.RawMessage `json:"tasks"`
	}
	resp, body = e.get(t, "/tasks/?state=SUCCESS")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &page))
	require.Len(t, page.Tasks, 1)
	assert.JSONEq(t, `true`, string(page.Tasks[0]["resume"]), "the listing shows a resumed task")
	var one struct {
		RequeuedFrom string `json:"requeued_from"`
		Resume       bool   `json:"resume"`
	}
	resp, body = e.get(t, "/tasks/"+requeued.TaskID+"/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &one))
	assert.Equal(t, resumed, one.RequeuedFrom, "GET /tasks/{id}/ names the dead task")
	assert.True(t, one.Resume, "GET /tasks/{id}/ shows a resumed task")

	requeued.Resume = false
	resp, body = e.post(t, "/dead/"+plain+"/requeue/?resume=0", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	decode(t, body, &requeued)
	assert.False(t, requeued.Resume)
	resp, body = e.get(t, "/tasks/"+requeued.TaskID+"/")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.NotContains(t, string(body), `"resume"`, "a plain requeue does not resume")
	snap = e.waitTerminal(t, requeued.TaskID)
	require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, int32(3), searches.Load(), "a plain requeue runs the step again")
}
