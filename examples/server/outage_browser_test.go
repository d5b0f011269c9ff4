package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/internal/redistest"
)

// outageWatchJS opens an EventSource on a task after a Last-Event-ID,
// as the demo page does after a reload, and records in window.watched
// what it sees: every error with the EventSource's state then, the ids of
// the messages (snapshots and tokens) and the last state.
const outageWatchJS = `(() => {
  const w = window.watched = { errors: [], ids: [], state: '' };
  const es = new EventSource(%q + '/task-status/' + %q + '/?lastEventId=' + encodeURIComponent(%q));
  es.onerror = () => { w.errors.push(es.readyState === EventSource.CLOSED ? 'closed' : 'connecting'); };
  es.addEventListener('token', (e) => { w.ids.push(e.lastEventId); });
  es.onmessage = (e) => {
    w.ids.push(e.lastEventId);
    w.state = JSON.parse(e.data).state;
    if (w.state === 'SUCCESS' || w.state === 'FAILURE') es.close();
  };
  return true;
})()`

// watched is window.watched of outageWatchJS.
type watched struct {
	Errors []string `json:"errors"`
	IDs    []string `json:"ids"`
	State  string   `json:"state"`
}

// TestEventSourceOpenedWhileRedisDown opens an EventSource in headless
// Chromium on a task while Redis is shut down, as a page reloaded during
// a Redis restart does: the stream's answer makes the browser reconnect
// (its error events leave it CONNECTING, never CLOSED), and once Redis is
// back it gets the events after its Last-Event-ID, up to SUCCESS. Before,
// the 503 closed the EventSource for good.
func TestEventSourceOpenedWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	api := startServer(t, redisConfig(t, srv))
	browser := startChromium(t)

	id := startTask(t, http.DefaultClient, api.URL, fmt.Sprintf(`{"flow":%q}`, exampleflows.PoemFlowName))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	before := eventSource(ctx, api.URL, id, nil)
	require.Equal(t, "SUCCESS", string(before.Last.State), "%v", before)
	require.Greater(t, len(before.IDs), 3, "%v", before)
	// The page saw the first messages; then its connection dropped.
	lastID := before.IDs[1]

	tab, closeTab := chromedp.NewContext(browser)
	t.Cleanup(closeTab)
	require.NoError(t, chromedp.Do(tab))
	tabCtx, cancelTab := context.WithTimeout(tab, waitTimeout)
	defer cancelTab()
	// A page of the API's origin that needs no Redis.
	require.NoError(t, chromedp.Do(tabCtx, chromedp.Navigate(api.URL+"/flows/")))

	srv.Stop()
	_, err := chromedp.Run(tabCtx, chromedp.Evaluate[bool](fmt.Sprintf(outageWatchJS, api.URL, id, lastID)))
	require.NoError(t, err)
	read := func() watched {
		raw, err := chromedp.Run(tabCtx, chromedp.Evaluate[[]byte](`window.watched`))
		require.NoError(t, err)
		var w watched
		require.NoError(t, json.Unmarshal(raw, &w), "%s", raw)
		return w
	}
	require.Eventually(t, func() bool { return len(read().Errors) > 0 }, waitTimeout, pollInterval, "the stream's answer during the outage")
	during := read()
	assert.Empty(t, during.IDs, "no message while Redis is down")
	assert.NotContains(t, during.Errors, "closed", "the EventSource reconnects: %v", during.Errors)
	srv.Restart()

	require.Eventually(t, func() bool { return read().State == "SUCCESS" }, waitTimeout, pollInterval, "the task's end once Redis is back")
	after := read()
	assert.NotContains(t, after.Errors, "closed", "%v", after.Errors)
	assert.Equal(t, before.IDs[2:], after.IDs, "the messages after the Last-Event-ID, once and in order")
}
