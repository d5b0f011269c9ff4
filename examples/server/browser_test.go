package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// demoPNGEnv names the file the "three tasks" browser test also writes its
// screenshot to. The README's screenshot, docs/demo.png, is made with:
//
//	FLOWS_DEMO_PNG=$PWD/docs/demo.png go test -run 'TestDemoPage/three' ./examples/server
const demoPNGEnv = "FLOWS_DEMO_PNG"

// pageServer is the example server as the browser tests run it: in
// memory, with the stream cutter in front of it and a fake Tavily behind
// web_search_flow.
type pageServer struct {
	URL    string
	cutter *streamCutter
	tavily *fakeTavily
}

// startPageServer starts the example server for a browser test, its flows
// paced by step and token (the offline model's pause before each reply and
// between streamed chunks). Everything stops when the test ends.
func startPageServer(t *testing.T, step, token time.Duration, options ...func(*config)) *pageServer {
	t.Helper()
	tavily := newFakeTavily()
	tavilySrv := httptest.NewServer(tavily)
	// The flows read this environment only: the offline model whatever
	// the machine's variables say, and Tavily at the fake.
	env := map[string]string{"TAVILY_API_KEY": "test-key", "TAVILY_API_URL": tavilySrv.URL}
	cfg := config{
		Workers:         8, // more than the tasks a test runs at once
		Flows:           exampleflows.Config{StepDelay: step, TokenDelay: token, Getenv: func(k string) string { return env[k] }},
		ShutdownTimeout: 5 * time.Second,
		Grace:           5 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range options {
		o(&cfg)
	}
	handler, run, err := newServer(cfg)
	require.NoError(t, err)
	cutter := newStreamCutter()
	srv := httptest.NewServer(cutter.wrap(handler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cutter.release()
		tavily.release()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		assert.NoError(t, <-done)
		tavilySrv.CloseClientConnections()
		tavilySrv.Close()
	})
	return &pageServer{URL: srv.URL, cutter: cutter, tavily: tavily}
}

// snapshot reads the task's snapshot from the API, as a script would.
func (s *pageServer) snapshot(t *testing.T, id string) progress.Snapshot {
	t.Helper()
	resp, err := http.Get(s.URL + "/tasks/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var snap progress.Snapshot
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&snap))
	return snap
}

// assertCardMatches checks that the card shows exactly the server's
// snapshot of the task: its state, and each step once, in order.
func assertCardMatches(t *testing.T, card cardView, snap progress.Snapshot) {
	t.Helper()
	assert.Equal(t, string(snap.State), card.State)
	require.Len(t, card.Steps, len(snap.Details.StepResults), "the card shows each step of the task once: %q", card.Steps)
	for i, step := range snap.Details.StepResults {
		switch step.Type {
		case progress.StepLog:
			assert.Equal(t, step.Message, card.Steps[i], "step %d", i)
		case progress.StepToolResult:
			assert.True(t, strings.HasPrefix(card.Steps[i], "tool: "), "step %d is a tool result: %q", i, card.Steps[i])
			assert.Contains(t, card.Steps[i], step.Tool, "step %d", i)
		}
	}
}

// finalText decodes the final result of a snapshot whose result is a
// string.
func finalText(t *testing.T, snap progress.Snapshot) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(snap.Details.FinalResult, &s), "final result %s", snap.Details.FinalResult)
	return s
}

// TestDemoPage drives the demo page in headless Chromium the way a person
// uses it, against the example server in this process (in-memory backend,
// offline model, fake Tavily). It saves a screenshot of each final state
// in $FLOWS_ARTIFACTS (default: a temporary directory).
func TestDemoPage(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)
	const (
		fastStep  = 20 * time.Millisecond
		fastToken = 2 * time.Millisecond
	)

	t.Run("poem_flow runs to SUCCESS with its steps, streamed text and result", func(t *testing.T) {
		srv := startPageServer(t, fastStep, 15*time.Millisecond)
		p := openPage(t, browser, srv.URL, artifacts)

		labels := eval[[]string](p, `[...document.querySelectorAll('#flow-labels .label')].map((l) => l.textContent)`)
		assert.Contains(t, strings.Join(labels, " | "), "offline", "the page says the model is offline: %q", labels)

		id := p.startFlow(exampleflows.PoemFlowName, nil)
		card := p.waitCard(id, "the poem task's SUCCESS", `c.state === 'SUCCESS'`)
		p.screenshot("poem-success")

		snap := srv.snapshot(t, id)
		assertCardMatches(t, card, snap)
		assert.Equal(t, "SUCCESS", card.Badge)
		assert.Equal(t, 100.0, card.Progress)
		steps := strings.Join(card.Steps, "\n")
		assert.Contains(t, steps, exampleflows.StepChooseTheme)
		assert.Contains(t, steps, exampleflows.StepWritePoem)
		poem := finalText(t, snap)
		require.NotNil(t, card.Result, "the result is shown")
		assert.Equal(t, poem, *card.Result)
		assert.Equal(t, poem, card.Live, "the streamed tokens add up to the poem")
		assert.False(t, card.LiveShown, "the streamed text is not shown twice once the result is there")
		assert.False(t, card.CancelShown, "no cancel button on a finished task")
		assert.True(t, card.RemoveShown)
		assert.Contains(t, strings.Join(card.Labels, " | "), "offline", "the card says the model is offline")

		lengths := eval[[]int](p, "__liveLengths["+jsString(id)+"] || []")
		assert.GreaterOrEqual(t, len(lengths), 4, "the text appeared token by token: lengths %v", lengths)
		for _, r := range srv.cutter.seen() {
			assert.Equal(t, "updates", r.Mode, "the page reads the update stream: %+v", r)
		}
	})

	t.Run("web_search_flow checks its input and shows the search as a tool result", func(t *testing.T) {
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)

		// Start without the required question: the page refuses.
		p.chooseFlow(exampleflows.WebSearchFlowName)
		p.do("click Start", chromedp.Click(chromedp.CSS("#start-button")))
		p.waitFor("the missing-question message", `document.getElementById('form-message').textContent.includes('question is required')`)
		assert.Equal(t, "input-question", eval[string](p, `document.activeElement.id`), "the focus is on the missing input")
		assert.True(t, eval[bool](p, `document.getElementById('input-question').hasAttribute('aria-invalid')`))
		assert.Empty(t, p.taskIDs(), "no task was started")

		// Type the question and press Enter, keyboard only.
		before := p.taskIDs()
		p.do("type the question", chromedp.SendKeys(chromedp.CSS("#input-question"), "What is Go?\r"))
		id := p.waitNewTask(before)
		card := p.waitCard(id, "the search task's SUCCESS", `c.state === 'SUCCESS'`)

		assert.Equal(t, []string{"What is Go?"}, srv.tavily.seen(), "the flow searched Tavily for the question")
		assertCardMatches(t, card, srv.snapshot(t, id))
		require.Len(t, card.Tools, 1, "one tool result block")
		tool := card.Tools[0]
		assert.Contains(t, tool.Summary, "tavily_search")
		assert.Contains(t, tool.Summary, exampleflows.StepSearch)
		assert.Contains(t, tool.Data, fakeResultTitle("What is Go?"), "the block holds the search results")
		assert.Contains(t, tool.Data, "\n  ", "the results are pretty-printed")
		assert.True(t, tool.Open && tool.DataShown)
		require.NotNil(t, card.Result)
		assert.NotEmpty(t, *card.Result)
		p.screenshot("web-search-success")

		// The block folds away and opens again.
		p.clickInCard(id, ".step-tool summary")
		folded := p.waitCard(id, "the tool result folded", `!c.tools[0].open`)
		assert.False(t, folded.Tools[0].DataShown)
		p.clickInCard(id, ".step-tool summary")
		p.waitCard(id, "the tool result open again", `c.tools[0].open && c.tools[0].dataShown`)
	})

	t.Run("cancel stops a running task", func(t *testing.T) {
		srv := startPageServer(t, time.Minute, fastToken) // the task stays running
		p := openPage(t, browser, srv.URL, artifacts)

		id := p.startFlow(exampleflows.PoemFlowName, nil)
		p.waitCard(id, "the task running", `c.state === 'PROGRESS' && c.cancelShown`)
		p.clickInCard(id, ".cancel")
		card := p.waitCard(id, "the task's FAILURE", `c.state === 'FAILURE'`)
		p.screenshot("cancelled")

		assert.Equal(t, queue.StatusCancelled, card.Status)
		assert.False(t, card.CancelShown)
		assert.True(t, card.RemoveShown)
		assert.Equal(t, "remove", eval[string](p, `document.activeElement.className`), "the focus moved from Cancel to Remove")
		assertCardMatches(t, card, srv.snapshot(t, id))
	})

	t.Run("a reload mid-task resumes the card without repeating anything", func(t *testing.T) {
		// Slow tokens, so that the reload comes while the poem streams.
		srv := startPageServer(t, fastStep, 60*time.Millisecond)
		p := openPage(t, browser, srv.URL, artifacts)

		id := p.startFlow(exampleflows.PoemFlowName, nil)
		before := p.waitCard(id, "the poem streaming", `c.state === 'PROGRESS' && c.live.length > 0`)
		p.reload()
		after := p.card(id)
		assert.NotEqual(t, "PENDING", after.State, "the card is drawn from the kept snapshot at once")
		assert.GreaterOrEqual(t, len(after.Steps), len(before.Steps))
		card := p.waitCard(id, "the resumed task's SUCCESS", `c.state === 'SUCCESS'`)
		p.screenshot("reloaded")

		snap := srv.snapshot(t, id)
		assertCardMatches(t, card, snap)
		poem := finalText(t, snap)
		assert.Equal(t, poem, card.Live, "the text kept before the reload and the tokens after it add up to the poem")
		require.NotNil(t, card.Result)
		assert.Equal(t, poem, *card.Result)

		resumed := false
		for _, r := range srv.cutter.seen() {
			if !r.FromHeader && r.LastEventID != "" {
				resumed = true
			}
		}
		assert.True(t, resumed, "after the reload the stream resumed with ?lastEventId=: %+v", srv.cutter.seen())
	})

	t.Run("a reload whose kept card fell behind is drawn again from the stream's opening snapshot", func(t *testing.T) {
		srv := startPageServer(t, fastStep, 60*time.Millisecond)
		p := openPage(t, browser, srv.URL, artifacts)

		id := p.startFlow(exampleflows.PoemFlowName, nil)
		before := p.waitCard(id, "the poem streaming", `c.state === 'PROGRESS' && c.live.length > 0`)
		require.NotEmpty(t, before.Steps)
		// Keep the last event id but lose the kept steps and state, as a
		// page whose storage was written before its last messages would;
		// stop the page from writing over the change as it goes away.
		p.waitFor("the task kept with its last event id", `(() => {
			const list = JSON.parse(localStorage.getItem(Object.keys(localStorage)[0]) || '[]');
			return list.length > 0 && list[0].lastEventId !== '';
		})()`)
		eval[bool](p, `(() => {
			const key = Object.keys(localStorage)[0];
			const list = JSON.parse(localStorage.getItem(key));
			list[0].snap = { state: 'PENDING', details: { status: 'Queued', progress: 0, step_results: [], final_result: null } };
			localStorage.setItem(key, JSON.stringify(list));
			Storage.prototype.setItem = () => {};
			return true;
		})()`)
		srv.cutter.cutAndHold() // the resumed stream waits until the card is looked at
		n := len(srv.cutter.seen())
		p.reload()
		require.Eventually(t, func() bool { return len(srv.cutter.seen()) > n }, waitTimeout, pollInterval, "the page asks for the stream again")
		behind := p.card(id)
		assert.Equal(t, "PENDING", behind.State, "drawn from what was kept")
		assert.Empty(t, behind.Steps)

		srv.cutter.release()
		card := p.waitCard(id, "the resumed task's SUCCESS", `c.state === 'SUCCESS'`)
		assertCardMatches(t, card, srv.snapshot(t, id))
		seen := srv.cutter.seen()[n:]
		require.NotEmpty(t, seen)
		assert.NotEmpty(t, seen[0].LastEventID, "it resumed after the kept id: %+v", seen)
		assert.Equal(t, "updates", seen[0].Mode)
	})

	t.Run("a stream cut by the server shows reconnecting, then resumes", func(t *testing.T) {
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)

		// The search waits at the fake Tavily, so the task is surely
		// running, and its stream open, when the stream is cut.
		id := p.startFlow(exampleflows.WebSearchFlowName, map[string]string{"question": "please hold"})
		p.waitCard(id, "the search running", `c.state === 'PROGRESS' && c.connection === 'live' && c.steps.length > 0`)
		require.Equal(t, 1, srv.cutter.cutAndHold(), "one stream open")
		card := p.waitCard(id, "the reconnecting state", `c.connection === 'reconnecting'`)
		assert.Contains(t, card.ConnectionText, "reconnecting")
		p.screenshot("reconnecting")

		srv.cutter.release()
		p.waitCard(id, "the stream back", `c.connection === 'live'`)
		srv.tavily.release()
		card = p.waitCard(id, "the task's SUCCESS", `c.state === 'SUCCESS'`)
		p.screenshot("reconnected")

		assert.Empty(t, card.ConnectionText)
		assert.Equal(t, 1, card.Reconnects)
		snap := srv.snapshot(t, id)
		assertCardMatches(t, card, snap)
		assert.Equal(t, finalText(t, snap), card.Live, "no token lost or repeated")
		seen := srv.cutter.seen()
		require.GreaterOrEqual(t, len(seen), 2)
		assert.True(t, seen[len(seen)-1].FromHeader && seen[len(seen)-1].LastEventID != "",
			"the EventSource reconnected with its Last-Event-ID: %+v", seen)
	})

	t.Run("a finished task is read once, not followed again", func(t *testing.T) {
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)

		id := p.startFlow(exampleflows.PoemFlowName, nil)
		p.waitCard(id, "the task's SUCCESS", `c.state === 'SUCCESS'`)
		n := len(srv.cutter.seen())
		// Make the kept card think it had not seen the end: after the
		// reload it resumes after the terminal event, and the server
		// answers 204.
		// The page saves again when it goes away: stop it from writing
		// over the change (the reload brings a fresh Storage).
		p.waitFor("the task kept", `(localStorage.getItem(Object.keys(localStorage)[0]) || '').includes('SUCCESS')`)
		eval[bool](p, `(() => {
			const key = Object.keys(localStorage)[0];
			const list = JSON.parse(localStorage.getItem(key));
			list[0].snap.state = 'PROGRESS';
			localStorage.setItem(key, JSON.stringify(list));
			Storage.prototype.setItem = () => {};
			return true;
		})()`)
		p.reload()
		card := p.waitCard(id, "SUCCESS read after the 204", `c.state === 'SUCCESS' && c.connection === 'closed'`)
		seen := srv.cutter.seen()[n:]
		require.Len(t, seen, 1, "one stream request after the reload: %+v", seen)
		assert.Equal(t, http.StatusNoContent, seen[0].Status)
		assertCardMatches(t, card, srv.snapshot(t, id))
	})

	t.Run("several tasks at once all finish", func(t *testing.T) {
		// More running tasks than the page opens streams at once
		// (MAX_STREAMS in app.js): the others wait for a free stream,
		// then catch up. The searches wait at the fake Tavily, so that
		// all six run together.
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)

		var ids []string
		for i := range 6 {
			ids = append(ids, p.startFlow(exampleflows.WebSearchFlowName, map[string]string{"question": fmt.Sprintf("hold %d", i)}))
		}
		p.waitFor("two tasks waiting for a stream", `document.querySelectorAll('#tasks > li[data-connection="waiting"]').length === 2`)
		for _, id := range ids[:4] {
			p.waitCard(id, "the stream of task "+id, `c.connection === 'live'`)
		}
		assert.Len(t, srv.cutter.seen(), 4, "four streams open")
		waiting := p.card(ids[5])
		assert.Contains(t, waiting.ConnectionText, "Waiting")
		// A waiting card still shows its task's state and steps, read
		// from GET /tasks/{id}/ now and then.
		p.waitCard(ids[5], "the waiting card's steps", `c.state === 'PROGRESS' && c.steps.length > 0 && c.connection === 'waiting'`)
		p.screenshot("six-tasks-running")

		srv.tavily.release()
		for _, id := range ids {
			card := p.waitCard(id, "SUCCESS of task "+id, `c.state === 'SUCCESS'`)
			snap := srv.snapshot(t, id)
			assertCardMatches(t, card, snap)
			assert.Equal(t, finalText(t, snap), card.Live, "task %s", id)
		}
		p.waitFor("the count", `document.getElementById('task-count').textContent === '(0 running, 6 finished)'`)
	})

	t.Run("a task the server no longer has is marked, not retried", func(t *testing.T) {
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)

		// As after a restart of the in-memory server: the browser keeps
		// a task the server never heard of.
		const id = "forgotten-task-0000"
		eval[bool](p, `(() => {
			localStorage.setItem('flows-demo:/:tasks', JSON.stringify([{ id: `+jsString(id)+`, flow: 'poem_flow',
				snap: { state: 'PROGRESS', details: { status: 'Writing', progress: 40, step_results: [{ type: 'log', message: 'kept step' }] } },
				lastEventId: '7', live: 'Half a po' }]));
			Storage.prototype.setItem = () => {}; // the page saves its own list as it goes
			return true;
		})()`)
		p.reload()
		card := p.waitCard(id, "the task marked gone", `c.connection === 'gone'`)
		assert.Contains(t, card.ConnectionText, "no longer has this task")
		assert.Equal(t, []string{"kept step"}, card.Steps, "the card keeps what it showed")
		assert.False(t, card.CancelShown)
		assert.True(t, card.RemoveShown)
		n := len(srv.cutter.seen())
		assert.Equal(t, 1, n, "one attempt to follow it: %+v", srv.cutter.seen())

		p.do("click Clear finished", chromedp.Click(chromedp.CSS("#clear-finished")))
		p.waitFor("the card cleared", `document.querySelectorAll('#tasks > li').length === 0`)
		assert.Equal(t, "[]", eval[string](p, `localStorage.getItem('flows-demo:/:tasks')`))
	})

	t.Run("three tasks in different states, clear finished", func(t *testing.T) {
		srv := startPageServer(t, fastStep, fastToken)
		p := openPage(t, browser, srv.URL, artifacts)
		p.setViewport(1100, 800, "light")

		done := p.startFlow(exampleflows.PoemFlowName, nil)
		p.waitCard(done, "the poem's SUCCESS", `c.state === 'SUCCESS'`)
		cancelled := p.startFlow(exampleflows.WebSearchFlowName, map[string]string{"question": "will this hold?"})
		p.waitCard(cancelled, "the first search running", `c.state === 'PROGRESS' && c.steps.length > 0`)
		p.clickInCard(cancelled, ".cancel")
		p.waitCard(cancelled, "the first search cancelled", `c.state === 'FAILURE'`)
		running := p.startFlow(exampleflows.WebSearchFlowName, map[string]string{"question": "Which tasks hold a stream open?"})
		p.waitCard(running, "the second search running", `c.state === 'PROGRESS' && c.steps.length > 0`)
		p.do("move the focus away from the buttons", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
		p.waitFor("the count", `document.getElementById('task-count').textContent === '(1 running, 2 finished)'`)

		shot := p.screenshot("three-states")
		if dst := os.Getenv(demoPNGEnv); dst != "" {
			png, err := os.ReadFile(shot)
			require.NoError(t, err)
			require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
			require.NoError(t, os.WriteFile(dst, png, 0o644))
			t.Logf("demo screenshot written to %s", dst)
		}
		p.setViewport(1100, 800, "dark")
		p.screenshot("three-states-dark")

		p.setViewport(390, 844, "light")
		assert.True(t, eval[bool](p, `document.documentElement.scrollWidth <= window.innerWidth`),
			"nothing is wider than a phone's screen")
		p.screenshot("three-states-phone")
		p.setViewport(1100, 800, "light")

		p.do("click Clear finished", chromedp.Click(chromedp.CSS("#clear-finished")))
		p.waitFor("only the running task left", `document.querySelectorAll('#tasks > li').length === 1`)
		assert.Equal(t, []string{running}, p.taskIDs())
		assert.True(t, eval[bool](p, `document.getElementById('clear-finished').disabled`))
		p.reload()
		assert.Equal(t, []string{running}, p.taskIDs(), "the cleared tasks stay cleared after a reload")

		srv.tavily.release()
		p.waitCard(running, "the second search's SUCCESS", `c.state === 'SUCCESS'`)
	})
}
