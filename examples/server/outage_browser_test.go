package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/internal/redistest"
)

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

	tab := openAPITab(t, browser, api.URL)
	srv.Stop()
	read := watchTask(t, tab, api.URL, id, lastID)
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
