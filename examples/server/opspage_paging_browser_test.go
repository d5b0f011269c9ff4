package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
	"github.com/flowsrun/flows/ssehttp/opspage"
)

// opsPageSize is the page of the ops page's listing (PAGE_SIZE in its
// app.js): "Load more" asks for that many tasks after the cursor.
const opsPageSize = 50

// valve holds the requests that pass it while it is shut, until it is
// opened; it starts open.
type valve struct {
	mu      sync.Mutex
	open    chan struct{} // closed while open
	arrived atomic.Int64  // requests that reached it, held or not
	held    chan struct{} // a value per request held
}

func newValve() *valve {
	v := &valve{open: make(chan struct{}), held: make(chan struct{}, 100)}
	close(v.open)
	return v
}

// shut makes the requests that come from now on wait.
func (v *valve) shut() {
	v.mu.Lock()
	defer v.mu.Unlock()
	select {
	case <-v.open:
		v.open = make(chan struct{})
	default:
	}
}

// release lets the requests held go on, and those that come after.
func (v *valve) release() {
	v.mu.Lock()
	defer v.mu.Unlock()
	select {
	case <-v.open:
	default:
		close(v.open)
	}
}

// pass holds r while the valve is shut (or until r's context ends).
func (v *valve) pass(r *http.Request) {
	v.arrived.Add(1)
	v.mu.Lock()
	open := v.open
	v.mu.Unlock()
	select {
	case <-open:
		return
	default:
	}
	select {
	case v.held <- struct{}{}:
	default:
	}
	select {
	case <-open:
	case <-r.Context().Done():
	}
}

// pagingHost is a host of the ops page on backend and store, with no
// worker (its tasks stay pending): the API under /api/, the page under
// /ops/. The listing's requests pass a valve of their own: more for
// those that go on from a cursor ("Load more"), refresh for the others.
type pagingHost struct {
	url           string
	broker        *queue.Broker
	more, refresh *valve
}

func startPagingHost(t *testing.T, backend queue.Backend, store progress.Backend) *pagingHost {
	t.Helper()
	reg := registry.New()
	reg.MustRegister("report", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
	h := &pagingHost{broker: queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg}), more: newValve(), refresh: newValve()}
	api := ssehttp.New(ssehttp.Config{
		Queue: h.broker, Progress: store, Registry: reg,
		Inspector: queue.NewInspector(backend, store, queue.InspectorConfig{}),
	})
	ops, err := opspage.New(opspage.Config{API: "/api/", Refresh: opsRefresh})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	mux.Handle("/ops/", http.StripPrefix("/ops/", ops))
	mux.HandleFunc("GET /api/tasks/{$}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("cursor") {
			h.more.pass(r)
		} else {
			h.refresh.pass(r)
		}
		http.StripPrefix("/api", api).ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.more.release()
		h.refresh.release()
		srv.CloseClientConnections()
		srv.Close()
	})
	h.url = srv.URL
	return h
}

// enqueue starts n tasks a few milliseconds apart, so that a listing,
// newest first, lists them in the opposite order, and returns their ids
// newest first.
func (h *pagingHost) enqueue(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		time.Sleep(2 * time.Millisecond)
		id, err := h.broker.Enqueue(context.Background(), "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		ids[n-1-i] = id
	}
	return ids
}

// TestOpsPageFollowsTheCursor fills the ops page's listing with more than
// two pages of tasks, on the in-memory backend and on Redis, and follows
// the listing's cursor with "Load more" to the end: each time the rows
// are the tasks newest first, none twice, none missing, also when tasks
// came in and a refresh listed them while a page was being loaded.
func TestOpsPageFollowsTheCursor(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)
	t.Run("memory", func(t *testing.T) {
		h := startPagingHost(t, queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}))
		followTheCursor(t, browser, artifacts, h)
	})
	t.Run("redis", func(t *testing.T) {
		b := startRedisBackend(t)
		followTheCursor(t, browser, artifacts, startPagingHost(t, b, b))
	})
}

// startRedisBackend starts a Redis server and returns a backend on it;
// both end when the test ends.
func startRedisBackend(t *testing.T) *redisbackend.Backend {
	t.Helper()
	srv := redistest.Start(t)
	opt := srv.ClientOption()
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	b, err := redisbackend.New(client, redisbackend.Config{Prefix: "paging", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return b
}

// waitHeld waits until v holds a request.
func waitHeld(t *testing.T, v *valve, what string) {
	t.Helper()
	select {
	case <-v.held:
	case <-time.After(waitTimeout):
		require.FailNow(t, "no request held: "+what)
	}
}

// followTheCursor runs the scenario of TestOpsPageFollowsTheCursor on h.
func followTheCursor(t *testing.T, browser context.Context, artifacts string, h *pagingHost) {
	old := h.enqueue(t, 2*opsPageSize+17)
	var fresh []string // the tasks started once the page is open, newest first
	p := newOpsTab(t, browser, h.url, artifacts)
	p.do("open the ops page", chromedp.Navigate(h.url+"/ops/"))

	// shown checks the rows against the tasks: none twice, the fresh
	// ones the page has seen on top, then the old ones from the newest
	// on with none missing; it returns how many old ones are shown.
	shown := func(what string) int {
		t.Helper()
		rows := rowIDs(p, "task-rows")
		seen := map[string]bool{}
		for _, id := range rows {
			require.False(t, seen[id], "%s: task %s listed twice: %q", what, id, rows)
			seen[id] = true
		}
		k := 0
		for k < len(rows) && slices.Contains(fresh, rows[k]) {
			k++
		}
		require.True(t, slices.Equal(fresh[len(fresh)-k:], rows[:k]), "%s: the fresh tasks on top, newest first: %q of %q", what, rows[:k], fresh)
		require.LessOrEqual(t, len(rows)-k, len(old), "%s: %q", what, rows)
		require.Equal(t, old[:len(rows)-k], rows[k:], "%s: the older tasks, newest first, none missing", what)
		return len(rows) - k
	}
	rowsAre := func(n int) string {
		return fmt.Sprintf(`document.querySelectorAll('#task-rows > tr').length === %d`, n)
	}
	loadDone := `document.getElementById('more').getAttribute('aria-disabled') !== 'true'`

	p.waitFor("the first page", rowsAre(opsPageSize)+` && !document.getElementById('more').hidden`)
	assert.Equal(t, opsPageSize, shown("the first page"))
	assert.Equal(t, "50 tasks, more to load.", eval[string](p, `document.getElementById('list-status').textContent`))

	p.focusOn("#more")
	p.press(kb.Enter)
	p.waitFor("the second page", rowsAre(2*opsPageSize))
	assert.Equal(t, 2*opsPageSize, shown("the second page"))
	assert.Equal(t, "more", focused(p), "the focus stays on the button while there is more")

	// The third page is held on its way; meanwhile tasks come in and a
	// refresh lists them (with as many tasks as were shown), then the
	// refreshes are held, and the third page comes.
	h.more.shut()
	p.press(kb.Enter)
	waitHeld(t, h.more, "the third page")
	fresh = h.enqueue(t, 3)
	after := h.refresh.arrived.Load()
	require.Eventually(t, func() bool { return h.refresh.arrived.Load() >= after+2 }, waitTimeout, pollInterval,
		"a refresh that started after the new tasks, and ended")
	h.refresh.shut()
	waitHeld(t, h.refresh, "a refresh")
	h.more.release()
	p.waitFor("the third page loaded", loadDone)
	shown("the third page, loaded across a refresh")

	// Once the refreshes come again: every task, the new ones on top.
	h.refresh.release()
	p.waitFor("the new tasks listed", fmt.Sprintf(`document.querySelector('#task-rows > tr').dataset.taskId === %s`, jsString(fresh[0])))
	for range 3 {
		if eval[bool](p, `document.getElementById('more').hidden`) {
			break
		}
		p.focusOn("#more")
		p.press(kb.Enter)
		p.waitFor("a page loaded", loadDone)
	}
	p.waitFor("every task listed", rowsAre(len(fresh)+len(old))+` && document.getElementById('more').hidden`)
	assert.Equal(t, len(old), shown("every task"))
	assert.Equal(t, append(slices.Clone(fresh), old...), rowIDs(p, "task-rows"))
	assert.Equal(t, fmt.Sprintf("%d tasks.", len(fresh)+len(old)), eval[string](p, `document.getElementById('list-status').textContent`))

	// The refreshes that follow keep every task listed, in order.
	after = h.refresh.arrived.Load()
	require.Eventually(t, func() bool { return h.refresh.arrived.Load() >= after+2 }, waitTimeout, pollInterval, "two refreshes")
	assert.Equal(t, append(slices.Clone(fresh), old...), rowIDs(p, "task-rows"))
}
