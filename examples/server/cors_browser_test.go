package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
)

// frontEndJS runs in a page of another origin and uses the API at api as
// a front end would: a JSON start-task (which makes the browser send a
// preflight first), an EventSource on the task until it ends, a
// cancel-task of the finished task and a start-task with a bad body, whose
// answers it reads. Every step that the browser refuses shows as
// "refused: <error>".
const frontEndJS = `(async (api) => {
  const out = {};
  const json = { 'Content-Type': 'application/json' };
  try {
    const r = await fetch(api + '/start-task/', { method: 'POST', headers: json, body: JSON.stringify({ flow: %q, inputs: {} }) });
    out.start = r.status;
    out.taskId = (await r.json()).task_id;
  } catch (e) {
    out.start = 'refused: ' + e;
    return out;
  }
  out.watch = await new Promise((resolve) => {
    const es = new EventSource(api + '/task-status/' + out.taskId + '/');
    let last = null;
    es.onmessage = (e) => {
      last = JSON.parse(e.data);
      if (last.state === 'SUCCESS' || last.state === 'FAILURE') { es.close(); resolve(last.state); }
    };
    es.onerror = () => { es.close(); resolve('refused: error after ' + (last && last.state)); };
  });
  try {
    const c = await fetch(api + '/cancel-task/' + out.taskId + '/', { method: 'POST' });
    out.cancel = c.status + ' ' + (await c.json()).error;
  } catch (e) {
    out.cancel = 'refused: ' + e;
  }
  try {
    const b = await fetch(api + '/start-task/', { method: 'POST', headers: json, body: '{"flow": 7}' });
    out.badStart = b.status + ' ' + (await b.json()).error;
  } catch (e) {
    out.badStart = 'refused: ' + e;
  }
  return out;
})(%q)`

// watchJS opens an EventSource on a task and tells whether a message
// arrived ("allowed") or the browser refused the stream ("refused").
const watchJS = `new Promise((resolve) => {
  const es = new EventSource(%q + '/task-status/' + %q + '/');
  es.onmessage = () => { es.close(); resolve('allowed'); };
  es.onerror = () => { es.close(); resolve('refused'); };
})`

// frontEndResult is what frontEndJS returns.
type frontEndResult struct {
	Start    any    `json:"start"` // the status, or why the browser refused
	TaskID   string `json:"taskId"`
	Watch    string `json:"watch"`
	Cancel   string `json:"cancel"`
	BadStart string `json:"badStart"`
}

// TestCrossOriginFrontEnd runs a front end on another origin in headless
// Chromium against the example server started with -cors-origins: a page
// of the listed origin starts a flow with a JSON POST (preflight and
// all), follows it with EventSource to SUCCESS and reads the API's error
// answers; a page of an origin not listed can do none of this. Before
// CORS, the listed page's preflight failed with 405.
func TestCrossOriginFrontEnd(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	blank := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!doctype html><title>front end</title>")
	})
	// Two origins that differ from the API's by their port, as a dev
	// server's does.
	listed := httptest.NewServer(blank)
	t.Cleanup(listed.Close)
	other := httptest.NewServer(blank)
	t.Cleanup(other.Close)
	cfg := testConfig()
	cfg.CORSOrigins = []string{listed.URL}
	api := startServer(t, cfg)

	// run opens pageURL in a new tab and returns what the promise of js
	// resolves to.
	run := func(t *testing.T, pageURL, js string, out any) {
		t.Helper()
		tab, closeTab := chromedp.NewContext(browser)
		t.Cleanup(closeTab)
		// The first Do opens the tab, which lives as long as tab: no time
		// limit on it.
		require.NoError(t, chromedp.Do(tab))
		ctx, cancel := context.WithTimeout(tab, waitTimeout)
		defer cancel()
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(pageURL+"/")))
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, out), "%s", raw)
	}

	var ok frontEndResult
	t.Run("listed origin", func(t *testing.T) {
		run(t, listed.URL, fmt.Sprintf(frontEndJS, exampleflows.PoemFlowName, api.URL), &ok)
		assert.Equal(t, 200.0, ok.Start, "start-task after its preflight")
		assert.Equal(t, "SUCCESS", ok.Watch, "the EventSource followed the task to its end")
		assert.Equal(t, "409 task already finished", ok.Cancel, "cancel-task passed the cross-origin protection and its error is readable")
		assert.Equal(t, `400 "flow" must be a string`, ok.BadStart, "error answers are readable")
	})

	t.Run("other origin", func(t *testing.T) {
		require.NotEmpty(t, ok.TaskID, "needs the task of the listed origin")
		var refused frontEndResult
		run(t, other.URL, fmt.Sprintf(frontEndJS, exampleflows.PoemFlowName, api.URL), &refused)
		assert.Contains(t, refused.Start, "refused: TypeError", "the preflight fails: the browser sends no start-task")
		var watch string
		run(t, other.URL, fmt.Sprintf(watchJS, api.URL, ok.TaskID), &watch)
		assert.Equal(t, "refused", watch, "the browser keeps the stream from a page of another origin")
	})
}
