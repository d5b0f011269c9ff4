package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// opsPNGEnv names the file the ops page test also writes its screenshot
// to. The README's screenshot, docs/ops.png, is made with:
//
//	FLOWS_OPS_PNG=$PWD/docs/ops.png go test -run 'TestOpsPage/memory' ./examples/server
const opsPNGEnv = "FLOWS_OPS_PNG"

// opsRefresh is how often the ops page reads the API in the tests: fast,
// so that the chart gets points within a second or two.
const opsRefresh = 200 * time.Millisecond

// openOpsPage opens a new tab of browser on the ops page of the example
// server at url and waits for its first reading of the API. The tab closes
// when the test ends, after a check that nothing went wrong in the page:
// no error, no rejected promise, no Content-Security-Policy violation.
func openOpsPage(t *testing.T, browser context.Context, url, artifacts string) *pageTab {
	t.Helper()
	p := newOpsTab(t, browser, url, artifacts)
	p.do("open the ops page", chromedp.Navigate(url+"/ops/"))
	p.waitFor("the first reading", `document.getElementById('updated').textContent.startsWith('Updated')`)
	return p
}

// newOpsTab opens a new tab of browser, with the probe of the page tests
// in every document it loads; the tab closes when the test ends, after a
// check that nothing went wrong in its pages.
func newOpsTab(t *testing.T, browser context.Context, url, artifacts string) *pageTab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: pageProbeJS}); err != nil {
		t.Fatalf("open a browser tab: %v", err)
	}
	p := &pageTab{t: t, ctx: ctx, url: url, artifacts: artifacts}
	t.Cleanup(p.checkNoProblems)
	return p
}

// rowIDs returns the ids of the task rows, top to bottom.
func rowIDs(p *pageTab, tbody string) []string {
	p.t.Helper()
	return eval[[]string](p, `[...document.querySelectorAll('#`+tbody+` > tr')].map((r) => r.dataset.taskId)`)
}

// press sends one key to the element that has the focus.
func (p *pageTab) press(key string) {
	p.t.Helper()
	p.do("press "+key, chromedp.KeyEvent(key))
}

// focused describes the element that has the focus: its id, else its
// class, and the task of its row, if any.
func focused(p *pageTab) string {
	p.t.Helper()
	return eval[string](p, `(() => {
		const a = document.activeElement;
		if (!a || a === document.body) return 'body';
		const row = a.closest('tr');
		return (a.id || a.className) + (row && row.dataset.taskId ? '@' + row.dataset.taskId : '');
	})()`)
}

// focusOn puts the focus on the element sel finds, as the Tab key would.
func (p *pageTab) focusOn(sel string) {
	p.t.Helper()
	if !eval[bool](p, `(() => { const e = document.querySelector(`+jsString(sel)+`); if (!e) return false; e.focus(); return document.activeElement === e; })()`) {
		p.fail("cannot focus %s", sel)
	}
}

// rowSel is the CSS selector of the row of task id in tbody.
func rowSel(tbody, id string) string {
	return fmt.Sprintf(`#%s > tr[data-task-id=%s]`, tbody, jsString(id))
}

// TestOpsPage drives the operators' page at /ops/ of the example server in
// headless Chromium, against the in-memory backend and Redis: the listing
// shows the started tasks and narrows with the filters, the stats and the
// chart fill in, a task opens with its live events, a dead task is
// re-queued resuming its completed steps, then plainly, each new task's
// detail saying so, and a running one cancelled with the keyboard alone,
// and the page fits a phone's width.
func TestOpsPage(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)
	refresh := func(c *config) { c.OpsRefresh = opsRefresh }

	t.Run("memory", func(t *testing.T) {
		srv := startPageServer(t, 20*time.Millisecond, 15*time.Millisecond, refresh)
		driveOpsPage(t, browser, srv, artifacts, os.Getenv(opsPNGEnv), nil)
	})
	t.Run("redis", func(t *testing.T) {
		redis := redistest.Start(t)
		var prefix string
		srv := startPageServer(t, 20*time.Millisecond, 15*time.Millisecond, refresh, func(c *config) {
			r := redisConfig(t, redis)
			c.RedisURL, c.Prefix, c.Queue = r.RedisURL, r.Prefix, r.Queue
			prefix = r.Prefix
		})
		// The record of a task whose first two runs were handed back
		// (a shutdown, the store down: no fault of its flow's), as the
		// backend's Retry leaves it; the example's workers hand nothing
		// back on their own.
		handBack := func(t *testing.T, id string) {
			require.NoError(t, redis.Do("HSET", prefix+":{"+id+"}:task", "attempt", "3", "handbacks", "2").Error())
		}
		driveOpsPage(t, browser, srv, artifacts, "", handBack)
	})
}

// TestOpsPageHooksAndAlreadyAsked checks, in headless Chromium against
// the in-memory backend and Redis, how the ops page shows two things the
// API tells apart: a task that has ended and waits to run its finish
// hooks again (hooks_waiting), in a tile of its own and not as delayed,
// and the tasks a cancellation by filter found asked to stop before
// (already_cancelled), in its announcement.
func TestOpsPageHooksAndAlreadyAsked(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)
	t.Run("memory", func(t *testing.T) {
		hooksAndAlreadyAsked(t, browser, artifacts, queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}))
	})
	t.Run("redis", func(t *testing.T) {
		b := startRedisBackend(t)
		hooksAndAlreadyAsked(t, browser, artifacts, b, b)
	})
}

// hooksAndAlreadyAsked runs the scenario of
// TestOpsPageHooksAndAlreadyAsked on backend and store.
func hooksAndAlreadyAsked(t *testing.T, browser context.Context, artifacts string, backend queue.Backend, store progress.Backend) {
	h := startPagingHost(t, backend, store)
	ctx := context.Background()

	// A worker whose finish hook cannot do its work for an hour runs one
	// task: the task ends, and waits to run its hooks again.
	reg := registry.New()
	reg.MustRegister("report", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
	w := queue.NewWorker(backend, store, queue.WorkerConfig{
		Name: "hooks-worker", Registry: reg, Logger: slog.New(slog.DiscardHandler),
		Backoff: func(int) time.Duration { return time.Hour },
		OnFinish: []queue.FinishHook{func(context.Context, queue.Finished) error {
			return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
		}},
	})
	workerCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, w.Run(workerCtx)) })
	stopWorker := sync.OnceFunc(func() { stop(); wg.Wait() })
	t.Cleanup(stopWorker)
	h.enqueue(t, 1)
	in := queue.NewInspector(backend, store, queue.InspectorConfig{})
	require.Eventually(t, func() bool {
		st, err := in.Stats(ctx)
		return err == nil && st.HooksWaiting == 1 && st.Running == 0
	}, waitTimeout, pollInterval, "the task given back for its hooks")
	// No worker from here on: the next tasks stay pending. One of them
	// has the flag an earlier cancellation set, before it could end it.
	stopWorker()
	tasks := h.enqueue(t, 2)
	require.NoError(t, backend.Cancel(ctx, tasks[1]))

	p := openOpsPage(t, browser, h.url, artifacts)
	tile := func(key string) string {
		return eval[string](p, `document.querySelector('#totals [data-key="`+key+`"] dd').textContent`)
	}
	p.waitFor("the task waiting for its hooks shown", `document.querySelector('#totals [data-key="hooks"] dd').textContent === '1'`)
	assert.Equal(t, "Hooks to re-run", eval[string](p, `document.querySelector('#totals [data-key="hooks"] dt').textContent`))
	assert.Equal(t, "0", tile("delayed"), "no run of a flow waits")
	assert.Equal(t, "1", tile("success"), "the task has ended")

	// Cancel matching, by flow, keyboard only: one task asked now, one
	// asked before.
	p.waitFor("the flow to filter by", `[...document.getElementById('filter-flow').options].some((o) => o.value === 'report')`)
	p.chooseOps("filter-flow", "report")
	p.waitFor("cancelling by flow possible", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'false'`)
	p.focusOn("#cancel-matching")
	p.press(kb.Enter)
	p.waitFor("the confirmation", `document.getElementById('confirm').open`)
	p.press(kb.Tab)
	assert.Equal(t, "confirm-yes", focused(p))
	p.press(kb.Enter)
	p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes('1 task asked to stop, 1 was already asked to stop.')`)
	p.waitFor("both tasks cancelled", `document.querySelector('#totals [data-key="failure"] dd').textContent === '2'`)
}

// driveOpsPage runs the ops page scenario against srv; with png set, it
// writes the page's screenshot there too. With handBack set, it also
// checks how the listing shows a task handBack gives two hand-backs at
// its third run.
func driveOpsPage(t *testing.T, browser context.Context, srv *pageServer, artifacts, png string, handBack func(t *testing.T, id string)) {
	client := &http.Client{Timeout: 10 * time.Second}
	poem := func() string { return startTask(t, client, srv.URL, `{"flow": "poem_flow"}`) }
	search := func(q string) string {
		return startTask(t, client, srv.URL, fmt.Sprintf(`{"flow": "web_search_flow", "inputs": {"question": %q}}`, q))
	}
	done1, done2 := poem(), poem()
	watched := search("hold: watched")
	stopped := search("hold: to cancel")
	failing := search("fail for the dead letters")

	p := openOpsPage(t, browser, srv.URL, artifacts)
	name := func(s string) string { return filepath.Base(t.Name()) + "-" + s }

	t.Run("the listing shows the started tasks", func(t *testing.T) {
		p.t = t
		for _, id := range []string{done1, done2, watched, stopped, failing} {
			p.waitFor("the row of task "+id, `document.querySelector(`+jsString(rowSel("task-rows", id))+`)`)
		}
		p.waitFor("both poems SUCCESS", fmt.Sprintf(`[%s, %s].every((id) => document.querySelector('#task-rows > tr[data-task-id="' + id + '"]').dataset.state === 'SUCCESS')`,
			jsString(done1), jsString(done2)))
		p.waitFor("the searches running", fmt.Sprintf(`[%s, %s].every((id) => document.querySelector('#task-rows > tr[data-task-id="' + id + '"]').dataset.state === 'PROGRESS')`,
			jsString(watched), jsString(stopped)))
		row := eval[map[string]string](p, `(() => { const r = document.querySelector(`+jsString(rowSel("task-rows", done1))+`);
			return { flow: r.querySelector('.c-flow').textContent, state: r.querySelector('.badge').textContent,
				progress: r.querySelector('.c-progress').textContent, attempt: r.querySelector('.c-attempt').textContent }; })()`)
		assert.Equal(t, map[string]string{"flow": exampleflows.PoemFlowName, "state": "Succeeded", "progress": "100%", "attempt": "1 of 3"}, row)
		if handBack != nil {
			// Of its five runs (three attempts, and one more for each
			// hand-back), the third.
			handBack(t, done2)
			p.waitFor("the hand-backs shown", `document.querySelector(`+jsString(rowSel("task-rows", done2)+" .c-attempt")+`).textContent === '3 of 5, 2 hand-backs not counted'`)
		}
	})

	t.Run("the stats render and the chart gets points", func(t *testing.T) {
		p.t = t
		p.waitFor("two successes counted", `Number(document.querySelector('#totals [data-key="success"] dd').textContent) >= 2`)
		p.waitFor("both flows in the table", `['poem_flow', 'web_search_flow'].every((f) => document.querySelector('#flows-table tr[data-flow="' + f + '"]'))`)
		p.waitFor("a live worker", `document.querySelector('#workers-table tr[data-alive="true"]')`)
		p.waitFor("three points on each chart", `['throughput-chart', 'latency-chart'].every((id) => Number(document.getElementById(id).dataset.points) >= 3)`)
		p.waitFor("a throughput above zero", `/^Now [1-9]|^Now 0\.[0-9]*[1-9]/.test(document.getElementById('throughput-summary').textContent)`)
		points := eval[int](p, `document.querySelector('#throughput-chart polyline').getAttribute('points').trim().split(' ').length`)
		assert.GreaterOrEqual(t, points, 3, "the line has a vertex per sample")
		assert.Contains(t, eval[string](p, `document.getElementById('latency-summary').textContent`), "median")
		assert.Equal(t, "2", eval[string](p, `document.querySelector('#flows-table tr[data-flow="poem_flow"] td[data-state="SUCCESS"]').textContent`))
		assert.GreaterOrEqual(t, eval[int](p, `Number(document.querySelector('#totals [data-key="running"] dd').textContent)`), 2, "the two held searches run")
	})

	t.Run("the filters narrow the listing", func(t *testing.T) {
		p.t = t
		// Keyboard: on the state selector, typing "S" picks Succeeded.
		p.focusOn("#filter-state")
		p.do("type S", chromedp.KeyEvent("S"))
		p.waitFor("the state filter on SUCCESS", `document.getElementById('filter-state').value === 'SUCCESS'`)
		p.waitFor("only the successes listed", `[...document.querySelectorAll('#task-rows > tr')].every((r) => r.dataset.state === 'SUCCESS')`)
		assert.ElementsMatch(t, []string{done1, done2}, rowIDs(p, "task-rows"))
		assert.Contains(t, eval[string](p, `document.getElementById('list-status').textContent`), "2 succeeded tasks")

		p.chooseOps("filter-state", "")
		p.chooseOps("filter-flow", exampleflows.WebSearchFlowName)
		p.waitFor("only the searches listed", `document.querySelectorAll('#task-rows > tr').length === 3 && [...document.querySelectorAll('#task-rows > tr')].every((r) => r.dataset.flow === 'web_search_flow')`)
		assert.ElementsMatch(t, []string{watched, stopped, failing}, rowIDs(p, "task-rows"))
		p.chooseOps("filter-flow", "")
		p.waitFor("every task listed again", `document.querySelectorAll('#task-rows > tr').length === 5`)

		// Keyboard: an owner typed, then Enter. The example server's
		// callers are anonymous: its tasks have no owner.
		p.focusOn("#filter-owner")
		p.do("type an owner", chromedp.KeyEvent("user:nobody"))
		assert.Len(t, rowIDs(p, "task-rows"), 5, "typing alone filters nothing")
		p.press(kb.Enter)
		p.waitFor("no task of that owner", `document.querySelectorAll('#task-rows > tr').length === 0`)
		p.waitFor("the listing says so", `document.getElementById('list-status').textContent === 'No tasks of user:nobody.'`)
		assert.True(t, eval[bool](p, `performance.getEntriesByType('resource').some((e) => new URL(e.name).searchParams.get('owner') === 'user:nobody')`),
			"the page asked for the owner's tasks")
		p.waitFor("cancelling by owner possible", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'false'`)
		p.setInput("filter-owner", "")
		p.waitFor("every task listed again", `document.querySelectorAll('#task-rows > tr').length === 5`)

		// A time range, in local time to the minute: the tasks started in
		// the last minute or so.
		local := func(minutes int) string {
			return eval[string](p, fmt.Sprintf(`(() => { const d = new Date(Date.now() + %d * 60000); d.setSeconds(0, 0);
				return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); })()`, minutes))
		}
		p.setInput("filter-until", local(-5))
		p.waitFor("no task ended before five minutes ago", `document.querySelectorAll('#task-rows > tr').length === 0`)
		p.waitFor("the listing says so", `document.getElementById('list-status').textContent === 'No tasks in the time range.'`)
		p.setInput("filter-since", local(-5))
		p.setInput("filter-until", local(5))
		p.waitFor("every task in the last five minutes", `document.querySelectorAll('#task-rows > tr').length === 5`)
		assert.True(t, eval[bool](p, `performance.getEntriesByType('resource').some((e) => {
			const q = new URL(e.name).searchParams;
			return q.has('since') && q.has('until') && Date.parse(q.get('since')) < Date.parse(q.get('until'));
		})`), "the page sent the range as RFC 3339 times")
		// A range that ends before it starts is refused in the page, and
		// the listing stays as it was.
		p.setInput("filter-since", local(10))
		p.waitFor("To marked invalid", `document.getElementById('filter-until').getAttribute('aria-invalid') === 'true' && !document.getElementById('range-error').hidden`)
		p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes('ends before it starts')`)
		assert.Len(t, rowIDs(p, "task-rows"), 5)
		// Cancel matching, keyboard only, with an owner and a range:
		// both are sent, and no task of the example's (they have no
		// owner) is cancelled.
		p.setInput("filter-since", local(-5))
		p.setInput("filter-owner", "user:nobody")
		p.waitFor("no task of that owner in the range", `document.querySelectorAll('#task-rows > tr').length === 0 && document.getElementById('range-error').hidden`)
		p.waitFor("cancelling by owner and range possible", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'false'`)
		p.focusOn("#cancel-matching")
		p.press(kb.Enter)
		p.waitFor("the confirmation", `document.getElementById('confirm').open`)
		assert.Equal(t, "Cancel all pending and running tasks of owner user:nobody in the time range?",
			eval[string](p, `document.getElementById('confirm-title').textContent`))
		p.press(kb.Tab)
		assert.Equal(t, "confirm-yes", focused(p))
		p.press(kb.Enter)
		p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes('0 tasks asked to stop.')`)
		assert.True(t, eval[bool](p, `performance.getEntriesByType('resource').some((e) => {
			const u = new URL(e.name);
			const q = u.searchParams;
			return u.pathname.endsWith('/cancel-tasks/') && q.get('owner') === 'user:nobody' &&
				Date.parse(q.get('since')) < Date.parse(q.get('until')) && !q.has('state') && !q.has('flow');
		})`), "the page sent the owner and the range to cancel-tasks")
		p.setInput("filter-owner", "")
		p.setInput("filter-since", "")
		p.setInput("filter-until", "")
		p.waitFor("the range cleared", `document.getElementById('filter-until').getAttribute('aria-invalid') === 'false' && document.getElementById('range-error').hidden`)
		p.waitFor("every task listed again", `document.querySelectorAll('#task-rows > tr').length === 5 && document.getElementById('list-status').textContent === '5 tasks.'`)
		p.waitFor("cancelling by filter off without a filter", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'true'`)
		p.chooseOps("filter-state", "PENDING")
		p.waitFor("cancelling by filter possible again", `document.getElementById('cancel-matching').getAttribute('aria-disabled') === 'false'`)
		p.chooseOps("filter-state", "")
		p.waitFor("every task listed again", `document.querySelectorAll('#task-rows > tr').length === 5`)
	})

	t.Run("keyboard focus order", func(t *testing.T) {
		p.t = t
		// A click on the page's title, which takes no focus, starts the
		// Tab order from the top.
		p.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur(), window.scrollTo(0, 0)`))
		p.do("click the title", chromedp.Click(chromedp.CSS(`h1`)))
		// A date and time input takes a Tab per part (day, month, year,
		// hours, minutes): each element is listed once.
		// The listing refreshes while the keys go, and a task whose state
		// changes may move to the top: the walk stops at the first task
		// row's control it reaches, whichever task is first by then.
		const rowLink = "open link@"
		var order []string
		for range 30 {
			p.press(kb.Tab)
			if f := focused(p); len(order) == 0 || order[len(order)-1] != f {
				order = append(order, f)
			}
			if strings.HasPrefix(order[len(order)-1], rowLink) {
				break
			}
		}
		require.NotEmpty(t, order)
		task := strings.TrimPrefix(order[len(order)-1], rowLink)
		assert.Contains(t, rowIDs(p, "task-rows"), task, "the walk ends on a listed task's link")
		assert.Equal(t, []string{"filter-state", "filter-flow", "filter-owner", "filter-since", "filter-until", "apply-filters", "cancel-matching", rowLink + task}, order,
			"the filters, then the tasks: the stats hold nothing to act on")

		// The skip link, first on the page, jumps to the tasks.
		p.focusOn(".skip-link")
		assert.True(t, eval[bool](p, `document.querySelector('.skip-link').getBoundingClientRect().left >= 0`), "the skip link shows when focused")
		p.press(kb.Enter)
		p.waitFor("the focus on the tasks", `document.activeElement.id === 'tasks-heading'`)
	})

	t.Run("a running task is cancelled, keyboard only", func(t *testing.T) {
		p.t = t
		cancel := rowSel("task-rows", stopped) + " .cancel"
		p.focusOn(cancel)
		p.press(kb.Enter)
		p.waitFor("the confirmation", `document.getElementById('confirm').open`)
		assert.Equal(t, "confirm-no", focused(p), "the safe answer has the focus")
		assert.Contains(t, eval[string](p, `document.getElementById('confirm-text').textContent`), stopped)
		p.press(kb.Escape)
		p.waitFor("the confirmation gone", `!document.getElementById('confirm').open`)
		assert.Equal(t, "cancel danger@"+stopped, focused(p), "the focus is back on the button")
		assert.Equal(t, "PROGRESS", string(taskState(t, srv.URL, stopped)), "Escape cancelled nothing")

		// Asked again before the close event of the question before has
		// come (a quick Escape, then Enter): that event must not close the
		// new question.
		ask, cancelAsk := context.WithTimeout(p.ctx, actionTimeout)
		stillOpen, err := chromedp.Run(ask, chromedp.Evaluate[bool](`(async () => {
			const d = document.getElementById('confirm');
			const b = document.querySelector(`+jsString(cancel)+`);
			b.click();
			d.close(); // as Escape does: its close event comes in a task of its own
			b.click();
			await new Promise((r) => setTimeout(r, 100));
			const open = d.open;
			document.getElementById('confirm-no').click();
			return open;
		})()`, chromedp.EvalAwaitPromise))
		cancelAsk()
		require.NoError(t, err)
		assert.True(t, stillOpen, "the second question stays open")
		p.waitFor("the confirmation gone", `!document.getElementById('confirm').open`)
		assert.Equal(t, "PROGRESS", string(taskState(t, srv.URL, stopped)), "no answer cancelled nothing")
		p.focusOn(cancel)

		p.press(kb.Enter)
		p.waitFor("the confirmation again", `document.getElementById('confirm').open`)
		p.press(kb.Tab)
		assert.Equal(t, "confirm-yes", focused(p))
		p.press(kb.Enter)
		p.waitFor("the task cancelled", `(() => { const r = document.querySelector(`+jsString(rowSel("task-rows", stopped))+`);
			return r.dataset.state === 'FAILURE' && r.querySelector('.cancel').hidden; })()`)
		assert.Equal(t, queue.StatusCancelled, eval[string](p, `document.querySelector(`+jsString(rowSel("task-rows", stopped))+` + ' .c-status').textContent`))
		assert.Equal(t, "open link@"+stopped, focused(p), "the focus stays on the task's row")
		p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes('being cancelled')`)
	})

	t.Run("a task opens with its live events", func(t *testing.T) {
		p.t = t
		p.focusOn(rowSel("task-rows", watched) + " .open")
		p.press(kb.Enter)
		p.waitFor("the task open and live", `(() => { const d = document.getElementById('detail');
			return !d.hidden && d.dataset.taskId === `+jsString(watched)+` && d.dataset.connection === 'live' && d.dataset.state === 'PROGRESS'; })()`)
		assert.Equal(t, "detail-heading", focused(p), "the focus moves to the task")
		p.waitFor("the task's flow and attempt", `/^web_search_flow, attempt [1-3] of 3$/.test(document.getElementById('detail-flow').textContent)`)
		p.waitFor("the opening snapshot", `document.querySelector('#detail-events .event-snapshot')`)
		before := eval[int](p, `Number(document.getElementById('detail').dataset.events)`)
		p.waitFor("the failed search among the dead letters", `document.querySelector(`+jsString(rowSel("dead-rows", failing))+`)`)
		p.waitFor("the listing up to date", `document.querySelector(`+jsString(rowSel("task-rows", failing))+`).dataset.state === 'FAILURE'`)
		p.setViewport(1280, 900, "light")
		p.do("move the focus away", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
		if png != "" {
			// The steps above come faster than a reader's: the page joins
			// their announcements into one line, which the README's
			// picture would show as a run-on status line.
			p.do("clear the announcements", chromedp.Evaluate[chromedp.Void](`document.getElementById('announcer').textContent = ''`))
		}
		shot := p.screenshot(name("task-open"))
		if png != "" {
			b, err := os.ReadFile(shot)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(png, b, 0o644))
			t.Logf("ops screenshot written to %s", png)
		}
		p.focusOn("#detail-close")

		srv.tavily.release() // the watched search goes on: its events come live
		p.waitFor("the task's SUCCESS, live", `document.getElementById('detail').dataset.state === 'SUCCESS'`)
		events := eval[[]string](p, `[...document.querySelectorAll('#detail-events .event-update .event-text')].map((e) => e.textContent)`)
		require.Greater(t, len(events), 2, "events came after the stream opened (%d before): %q", before, events)
		all := strings.Join(events, "\n")
		assert.Contains(t, all, "tool result of tavily_search")
		assert.Contains(t, all, "state Succeeded")
		snap := srv.snapshot(t, watched)
		assert.Equal(t, finalText(t, snap), eval[string](p, `document.getElementById('detail-result').textContent`))
		assert.Equal(t, finalText(t, snap), eval[string](p, `document.getElementById('detail-output').textContent`), "the streamed tokens add up to the answer")
		p.waitFor("the stream closed", `document.getElementById('detail').dataset.connection === 'closed'`)
		for _, r := range srv.cutter.seen() {
			assert.Equal(t, "updates", r.Mode, "the page reads the update stream")
		}
		p.screenshot(name("task-ended"))
		p.press(kb.Escape)
		p.waitFor("the task closed", `document.getElementById('detail').hidden`)
		assert.Equal(t, "open link@"+watched, focused(p), "the focus goes back to the task's row")
	})

	t.Run("a dead task is requeued, keyboard only", func(t *testing.T) {
		p.t = t
		// requeuedFrom is the task the listing says was re-queued from
		// dead, once it says so.
		requeuedFrom := func(dead string) queue.TaskSummary {
			t.Helper()
			var page queue.TaskPage
			getJSON(t, srv.URL+"/tasks/?flow=web_search_flow", &page)
			for _, task := range page.Tasks {
				if task.RequeuedFrom == dead {
					return task
				}
			}
			require.Fail(t, "no task re-queued from "+dead, "%+v", page.Tasks)
			return queue.TaskSummary{}
		}
		const option = "Resume from its completed steps (replay what the dead task finished)"
		openConfirmation := func(requeue string) {
			t.Helper()
			p.focusOn(requeue)
			p.press(kb.Enter)
			p.waitFor("the confirmation", `document.getElementById('confirm').open`)
			assert.Equal(t, "confirm-no", focused(p), "the safe answer has the focus")
			assert.True(t, eval[bool](p, `!document.getElementById('confirm-option').hidden && !document.getElementById('confirm-check').checked`),
				"the option to resume is offered, off")
			assert.Equal(t, option, eval[string](p, `document.getElementById('confirm-check').labels[0].textContent.trim()`))
		}

		// Resumed: the checkbox is before the buttons, Shift+Tab from Keep.
		requeue := rowSel("dead-rows", failing) + " .requeue"
		p.waitFor("the failed search among the dead letters", `document.querySelector(`+jsString(requeue)+`)`)
		assert.Contains(t, eval[string](p, `document.querySelector(`+jsString(rowSel("dead-rows", failing))+`).textContent`), "made-up failure")
		openConfirmation(requeue)
		p.do("press Shift+Tab", chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(kb.ModifierShift)))
		assert.Equal(t, "confirm-check", focused(p))
		p.press(" ")
		assert.True(t, eval[bool](p, `document.getElementById('confirm-check').checked`), "Space checks the option")
		p.press(kb.Tab)
		p.press(kb.Tab)
		assert.Equal(t, "confirm-yes", focused(p))
		p.press(kb.Enter)
		p.waitFor("the dead task gone from the list", `!document.querySelector(`+jsString(requeue)+`)`)
		p.waitFor("the new task named", `document.getElementById('dead-status').textContent.startsWith('Requeued task')`)
		status := eval[string](p, `document.getElementById('dead-status').textContent`)
		resumed := requeuedFrom(failing)
		assert.True(t, resumed.Resume, "the request asked to resume: %+v", resumed)
		assert.Equal(t, "Requeued task "+failing[:8]+" as task "+resumed.ID+", resuming its completed steps.", status, "the page names the new task")
		p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes(`+
			jsString("Task "+failing[:8]+" requeued as task "+resumed.ID[:8]+", resuming its completed steps.")+`)`)
		p.waitFor("the new task listed as resuming", `(document.querySelector(`+jsString(rowSel("task-rows", resumed.ID)+" .c-attempt")+`) || {}).textContent.endsWith(`+
			jsString(", resumes dead task "+failing[:8])+`)`)
		assert.NotEqual(t, "body", focused(p), "the focus is still on the page")
		tasksFit := func(when string) {
			t.Helper()
			assert.True(t, eval[bool](p, `(() => { const w = document.getElementById('task-rows').closest('.table-wrap');
				return w.scrollWidth <= w.clientWidth; })()`),
				"the task table fits its panel at 1280 px %s: %d > %d", when,
				eval[int](p, `document.getElementById('task-rows').closest('.table-wrap').scrollWidth`),
				eval[int](p, `document.getElementById('task-rows').closest('.table-wrap').clientWidth`))
		}
		require.Equal(t, 1280, eval[int](p, `window.innerWidth`))
		tasksFit("with a resumed task listed")

		// Plain: its search fails again, and it is requeued as it was,
		// the option off again.
		requeue = rowSel("dead-rows", resumed.ID) + " .requeue"
		p.waitFor("the resumed task among the dead letters", `document.querySelector(`+jsString(requeue)+`)`)
		openConfirmation(requeue)
		p.press(kb.Tab)
		assert.Equal(t, "confirm-yes", focused(p))
		p.press(kb.Enter)
		p.waitFor("the dead task gone from the list", `!document.querySelector(`+jsString(requeue)+`)`)
		p.waitFor("the new task named", `document.getElementById('dead-status').textContent.startsWith('Requeued task '+`+jsString(resumed.ID[:8])+`)`)
		plain := requeuedFrom(resumed.ID)
		assert.False(t, plain.Resume, "a plain requeue: %+v", plain)
		assert.Equal(t, "Requeued task "+resumed.ID[:8]+" as task "+plain.ID+".", eval[string](p, `document.getElementById('dead-status').textContent`))
		p.waitFor("the announcement", `document.getElementById('announcer').textContent.includes(`+
			jsString("Task "+resumed.ID[:8]+" requeued as task "+plain.ID[:8]+".")+`)`)
		p.waitFor("the plain task listed", `document.querySelector(`+jsString(rowSel("task-rows", plain.ID))+`)`)
		assert.NotContains(t, eval[string](p, `document.querySelector(`+jsString(rowSel("task-rows", plain.ID)+" .c-attempt")+`).textContent`), "resumes")

		// Each new task's detail says where it came from, and the dead
		// task, still listed, opens from there.
		openDetail := func(id string) string {
			t.Helper()
			p.focusOn(rowSel("task-rows", id) + " .open")
			p.press(kb.Enter)
			p.waitFor("task "+id+" open, its origin read", `(() => { const d = document.getElementById('detail');
				return !d.hidden && d.dataset.taskId === `+jsString(id)+` && !document.getElementById('detail-origin').hidden; })()`)
			assert.Equal(t, "detail-heading", focused(p), "the focus moves to the task")
			return eval[string](p, `document.getElementById('detail-origin').textContent`)
		}
		assert.Equal(t, "Re-queued from dead task "+failing[:8]+", resuming its completed steps", openDetail(resumed.ID))
		tasksFit("beside the resumed task open")
		p.screenshot(name("resumed-open"))
		p.press(kb.Tab)
		p.press(kb.Tab)
		assert.Equal(t, "detail-origin-open", focused(p), "after Close, the dead task's id")
		assert.Equal(t, "Open dead task "+failing, eval[string](p, `document.getElementById('detail-origin-open').getAttribute('aria-label')`))
		p.press(kb.Enter)
		p.waitFor("the dead task open", `document.getElementById('detail').dataset.taskId === `+jsString(failing)+` && /^web_search_flow, attempt /.test(document.getElementById('detail-flow').textContent)`)
		assert.True(t, eval[bool](p, `document.getElementById('detail-origin').hidden`), "the first task was not re-queued")
		assert.Equal(t, "detail-heading", focused(p), "the focus moves to the dead task")
		p.press(kb.Escape)
		p.waitFor("the task closed", `document.getElementById('detail').hidden`)
		assert.Equal(t, "open link@"+failing, focused(p), "the focus goes to the dead task's row")

		origin := openDetail(plain.ID)
		assert.Equal(t, "Re-queued from dead task "+resumed.ID[:8], origin)
		assert.NotContains(t, origin, "resuming", "a plain requeue resumes nothing")
		p.press(kb.Escape)
		p.waitFor("the task closed", `document.getElementById('detail').hidden`)
		assert.Equal(t, "open link@"+plain.ID, focused(p), "the focus goes back to the task's row")
	})

	t.Run("phone width has no horizontal scroll", func(t *testing.T) {
		p.t = t
		p.focusOn(rowSel("task-rows", done1) + " .open")
		p.press(kb.Enter)
		p.waitFor("the task open", `document.getElementById('detail').dataset.state === 'SUCCESS'`)
		for _, scheme := range []string{"light", "dark"} {
			p.setViewport(390, 844, scheme)
			assert.True(t, eval[bool](p, `document.documentElement.scrollWidth <= window.innerWidth`),
				"nothing is wider than a phone's screen (%s): %d > %d", scheme,
				eval[int](p, `document.documentElement.scrollWidth`), eval[int](p, `window.innerWidth`))
			p.screenshot(name("phone-" + scheme))
		}
		p.setViewport(1280, 900, "dark")
		p.screenshot(name("dark"))
	})
}

// setInput sets the input element id to value, as a person typing it
// and leaving the field does (a change event).
func (p *pageTab) setInput(id, value string) {
	p.t.Helper()
	if !eval[bool](p, fmt.Sprintf(`(() => {
		const i = document.getElementById(%s);
		if (!i) return false;
		i.value = %s;
		i.dispatchEvent(new Event('change', { bubbles: true }));
		return i.value === %[2]s;
	})()`, jsString(id), jsString(value))) {
		p.fail("cannot set %s to %q", id, value)
	}
}

// chooseOps selects value in the select element id, as a person picking
// it from the list does.
func (p *pageTab) chooseOps(id, value string) {
	p.t.Helper()
	ok := eval[bool](p, fmt.Sprintf(`(() => {
		const s = document.getElementById(%s);
		if (![...s.options].some((o) => o.value === %s)) return false;
		s.value = %[2]s;
		s.dispatchEvent(new Event('change', { bubbles: true }));
		return true;
	})()`, jsString(id), jsString(value)))
	if !ok {
		p.fail("the selector %s has no %q", id, value)
	}
}
