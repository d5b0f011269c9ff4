package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// followJS opens an EventSource on a task after a Last-Event-ID ("" for
// none), as the demo page does after a reload, and records in
// window.watched what it sees: every error with the EventSource's state
// then, the ids of the messages (snapshots and tokens) and the last
// state.
const followJS = `(() => {
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

// watched is window.watched of followJS.
type watched struct {
	Errors []string `json:"errors"`
	IDs    []string `json:"ids"`
	State  string   `json:"state"`
}

// openAPITab opens a tab of browser on a page of the API at apiURL that
// needs no backend (its flows), so that the tab's requests to the API
// are of its origin, and returns the tab's context, which ends after
// waitTimeout or with the test.
func openAPITab(t *testing.T, browser context.Context, apiURL string) context.Context {
	t.Helper()
	tab, closeTab := chromedp.NewContext(browser)
	t.Cleanup(closeTab)
	require.NoError(t, chromedp.Do(tab))
	tabCtx, cancelTab := context.WithTimeout(tab, waitTimeout)
	t.Cleanup(cancelTab)
	require.NoError(t, chromedp.Do(tabCtx, chromedp.Navigate(apiURL+"/flows/")))
	return tabCtx
}

// watchTask runs followJS in tab on task id after lastID ("" for none),
// and returns the func that reads what it has seen so far.
func watchTask(t *testing.T, tab context.Context, apiURL, id, lastID string) func() watched {
	t.Helper()
	_, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(followJS, apiURL, id, lastID)))
	require.NoError(t, err)
	return func() watched {
		raw, err := chromedp.Run(tab, chromedp.Evaluate[[]byte](`window.watched`))
		require.NoError(t, err)
		var w watched
		require.NoError(t, json.Unmarshal(raw, &w), "%s", raw)
		return w
	}
}
