package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
	"github.com/flowsrun/flows/ssehttp/opspage"
)

// sessionCookie is the cookie that names the caller of the API in
// TestOpsPageBehindAccessChecks: "op" and "viewer" are operators, the
// viewer may only look; "user" is not an operator; anyone else is
// refused.
const sessionCookie = "session"

// accessServer is a host that mounts the API under /api/ with an
// Identify that reads the session cookie, and the ops page under /ops/.
// No worker runs: the tasks it is given stay pending.
func accessServer(t *testing.T) (url string, broker *queue.Broker) {
	t.Helper()
	reg := registry.New()
	reg.MustRegister("report", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) { return "done", nil }))
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	backend := queue.NewMemory(queue.MemoryConfig{})
	broker = queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
	api := ssehttp.New(ssehttp.Config{
		Queue:     broker,
		Progress:  store,
		Registry:  reg,
		Inspector: queue.NewInspector(backend, store, queue.InspectorConfig{}),
		Identify: func(r *http.Request) (ssehttp.Principal, error) {
			c, err := r.Cookie(sessionCookie)
			if err != nil {
				return ssehttp.Principal{}, errors.New("sign in first")
			}
			switch c.Value {
			case "op", "viewer":
				return ssehttp.Principal{ID: c.Value, Operator: true}, nil
			case "user":
				return ssehttp.Principal{ID: "user"}, nil
			}
			return ssehttp.Principal{}, errors.New("unknown session")
		},
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			if a.Principal.ID == "viewer" && (a.Action == ssehttp.ActionCancel || a.Action == ssehttp.ActionCancelMany || a.Action == ssehttp.ActionRequeue) {
				return errors.New("viewers may look, not act")
			}
			return nil
		},
	})
	ops, err := opspage.New(opspage.Config{API: "/api/", Refresh: opsRefresh})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	mux.Handle("/ops/", http.StripPrefix("/ops/", ops))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL, broker
}

// TestOpsPageBehindAccessChecks drives the ops page of a host whose API
// is under /api/ and knows its callers by a session cookie: the page
// says when the API refuses the browser's session, and works with an
// operator's, its event stream included, each call carrying the cookie;
// an operator whom Authorize lets only look is told so when acting.
func TestOpsPageBehindAccessChecks(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)
	url, broker := accessServer(t)
	ctx := context.Background()
	var ids []string
	for range 2 {
		id, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{Owner: "user"})
		require.NoError(t, err)
		ids = append(ids, id)
	}

	p := newOpsTab(t, browser, url, artifacts)
	p.do("open the ops page", chromedp.Navigate(url+"/ops/"))
	// As signed in: the cookie the host's sign-in would set.
	session := func(value string) {
		p.t.Helper()
		p.do("set the session", chromedp.Evaluate[chromedp.Void](`document.cookie = `+jsString(sessionCookie+"="+value+"; path=/")))
		p.do("reload", chromedp.Reload())
	}
	alert := func() string {
		p.t.Helper()
		return eval[string](p, `document.getElementById('alert').hidden ? '' : document.getElementById('alert').textContent`)
	}

	p.waitFor("the refusal shown", `!document.getElementById('alert').hidden`)
	assert.Contains(t, alert(), "401: sign in first")
	assert.Contains(t, alert(), "does not know who you are")

	session("user")
	p.waitFor("the refusal of a non-operator", `document.getElementById('alert').textContent.includes('403')`)
	assert.Contains(t, alert(), "403: operators only")
	assert.Empty(t, rowIDs(p, "task-rows"), "nothing listed")

	session("viewer")
	p.waitFor("the pending tasks listed", `document.querySelectorAll('#task-rows > tr[data-state="PENDING"]').length === 2`)
	assert.Empty(t, alert(), "no refusal")
	assert.ElementsMatch(t, ids, rowIDs(p, "task-rows"))
	p.do("click Cancel", chromedp.Click(chromedp.CSS(rowSel("task-rows", ids[0])+" .cancel")))
	p.waitFor("the confirmation", `document.getElementById('confirm').open`)
	p.do("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
	p.waitFor("the refusal announced", `document.getElementById('announcer').textContent.includes('403: viewers may look, not act')`)
	assert.True(t, eval[bool](p, `document.getElementById('announcer').checkVisibility()`), "and shown")
	assert.Empty(t, alert(), "the lists still work")
	assert.Equal(t, progress.StatePending, taskStateOf(t, broker, ids[0]), "nothing was cancelled")

	session("op")
	p.waitFor("the pending tasks listed", `document.querySelectorAll('#task-rows > tr[data-state="PENDING"]').length === 2`)
	p.waitFor("no refusal", `document.getElementById('alert').hidden`)

	// A task's stream is the API's too: the EventSource carries the
	// cookie.
	p.do("open a task", chromedp.Click(chromedp.CSS(rowSel("task-rows", ids[1])+" .open")))
	p.waitFor("the stream live", `document.getElementById('detail').dataset.connection === 'live'`)
	p.waitFor("the opening snapshot", `document.querySelector('#detail-events .event-snapshot')`)

	// Cancel by filter: the flow and the state Pending.
	p.chooseOps("filter-flow", "report")
	p.chooseOps("filter-state", "PENDING")
	p.waitFor("the button usable", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'false'`)
	p.do("click Cancel matching", chromedp.Click(chromedp.CSS("#cancel-matching")))
	p.waitFor("the confirmation", `document.getElementById('confirm').open`)
	assert.Contains(t, eval[string](p, `document.getElementById('confirm-title').textContent`), "pending tasks of report")
	p.do("confirm", chromedp.Click(chromedp.CSS("#confirm-yes")))
	p.waitFor("the result announced", `document.getElementById('announcer').textContent.includes('2 tasks asked to stop')`)
	for _, id := range ids {
		assert.Equal(t, progress.StateFailure, taskStateOf(t, broker, id))
	}
	p.waitFor("the open task's end, live", `document.getElementById('detail').dataset.state === 'FAILURE'`)
	p.waitFor("no pending task left", `document.querySelectorAll('#task-rows > tr').length === 0`)
	p.screenshot("ops-access")
}

// taskStateOf reads the state of task id through the broker.
func taskStateOf(t *testing.T, broker *queue.Broker, id string) progress.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := broker.Task(ctx, id)
	require.NoError(t, err)
	return info.Snapshot.State
}

// TestOpsPageLoadsMore lists more tasks than a page holds (50): "Load
// more" brings the rest with the listing's cursor, with the keyboard, and
// the refreshes that follow keep every loaded task listed.
func TestOpsPageLoadsMore(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	url, broker := accessServer(t)
	ctx := context.Background()
	const n = 57
	for range n {
		_, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
	}
	p := newOpsTab(t, browser, url, artifactsDir(t))
	p.do("set the session", chromedp.Navigate(url+"/ops/"),
		chromedp.Evaluate[chromedp.Void](`document.cookie = `+jsString(sessionCookie+"=op; path=/")), chromedp.Reload())
	p.waitFor("the first page", `document.querySelectorAll('#task-rows > tr').length === 50 && !document.getElementById('more').hidden`)
	assert.Contains(t, eval[string](p, `document.getElementById('list-status').textContent`), "50 tasks, more to load")
	firstPage := rowIDs(p, "task-rows")

	p.focusOn("#more")
	p.press(kb.Enter)
	p.waitFor("the rest", fmt.Sprintf(`document.querySelectorAll('#task-rows > tr').length === %d`, n))
	ids := rowIDs(p, "task-rows")
	assert.Equal(t, firstPage, ids[:50], "the next page comes after the first")
	seen := map[string]bool{}
	for _, id := range ids {
		assert.False(t, seen[id], "task %s listed twice", id)
		seen[id] = true
	}
	p.waitFor("no more to load", `document.getElementById('more').hidden`)
	assert.Equal(t, "open link@"+ids[50], focused(p), "the focus moves to the first task loaded")
	p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes('Loaded 7 more')`)

	// A few refreshes later, all are still listed.
	points := eval[int](p, `Number(document.getElementById('throughput-chart').dataset.points)`)
	require.Less(t, points, 58, "the chart counts the refreshes until it holds 60 points")
	p.waitFor("two refreshes", fmt.Sprintf(`Number(document.getElementById('throughput-chart').dataset.points) >= %d`, points+2))
	assert.Len(t, rowIDs(p, "task-rows"), n)
}

// TestOpsPageRestsWhenHidden checks that a page in a hidden tab stops
// reading the API, and catches up when shown again.
func TestOpsPageRestsWhenHidden(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	url, _ := accessServer(t)
	p := newOpsTab(t, browser, url, artifactsDir(t))
	p.do("set the session", chromedp.Navigate(url+"/ops/"),
		chromedp.Evaluate[chromedp.Void](`document.cookie = `+jsString(sessionCookie+"=op; path=/")), chromedp.Reload())
	p.waitFor("two readings", `Number(document.getElementById('throughput-chart').dataset.points) >= 2`)
	points := func() int { return eval[int](p, `Number(document.getElementById('throughput-chart').dataset.points)`) }
	visible := func(v bool) {
		p.do("hide or show the tab", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`Object.defineProperty(document, 'hidden', { value: %t, configurable: true }),
			document.dispatchEvent(new Event('visibilitychange'))`, !v)))
	}

	visible(false)
	hidden := points()
	time.Sleep(10 * opsRefresh) // ten refreshes, were it reading
	assert.LessOrEqual(t, points(), hidden+1, "a hidden page reads nothing (one reading may have been under way)")
	visible(true)
	p.waitFor("readings again", fmt.Sprintf(`Number(document.getElementById('throughput-chart').dataset.points) >= %d`, hidden+3))
}
