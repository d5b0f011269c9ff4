package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/llms"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/internal/sse"
)

// gatedModel answers as the offline model does, once gate is closed: a
// task of it runs, and its stream stays open, until the test lets it end.
type gatedModel struct {
	offline *llm.Offline
	gate    <-chan struct{}
}

func (m gatedModel) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	select {
	case <-m.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return m.offline.GenerateContent(ctx, messages, options...)
}

func (m gatedModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

// TestEventSourceOverTheStreamCap opens an EventSource in headless
// Chromium on a running task while its caller (the address both the test
// and the browser connect from) holds its one stream under
// -caller-max-streams 1, as a user with one tab too many does: the
// answer makes the browser reconnect (its error events leave it
// CONNECTING, never CLOSED) and it gets nothing while the place is held;
// once the other stream closes, a reconnection gets the stream, and the
// task's messages up to SUCCESS. Before, the 429 closed the EventSource
// for good.
func TestEventSourceOverTheStreamCap(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	offline := llm.NewOffline()
	offline.Delay = 0
	cfg := testConfig()
	cfg.Flows.Model = gatedModel{offline: offline, gate: gate}
	cfg.Limits.MaxStreams = 1
	api := startServer(t, cfg)
	browser := startChromium(t)

	id := startTask(t, http.DefaultClient, api.URL, fmt.Sprintf(`{"flow":%q}`, exampleflows.PoemFlowName))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// The caller's one stream: open, and a stream (its first message),
	// for as long as the test holds it.
	holdCtx, release := context.WithCancel(ctx)
	defer release()
	req, err := http.NewRequestWithContext(holdCtx, http.MethodGet, api.URL+"/task-status/"+id+"/", nil)
	require.NoError(t, err)
	held, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer held.Body.Close()
	require.Equal(t, http.StatusOK, held.StatusCode)
	require.Empty(t, held.Header.Get("Retry-After"), "a stream, not the refusal")
	first, err := sse.NewReader(held.Body).Next()
	require.NoError(t, err)
	require.NotEmpty(t, first.Retry, "the stream's retry hint")

	read := watchTask(t, openAPITab(t, browser, api.URL), api.URL, id, "")
	require.Eventually(t, func() bool { return len(read().Errors) > 0 }, waitTimeout, pollInterval, "the refusal of the stream over the cap")
	over := read()
	assert.Empty(t, over.IDs, "no message while the caller's place is held")
	assert.NotContains(t, over.Errors, "closed", "the EventSource reconnects: %v", over.Errors)

	// The other stream closes; the EventSource's next reconnection (after
	// the retry hint, 3 s) gets the stream. The task ends after that.
	release()
	require.Eventually(t, func() bool { return len(read().IDs) > 0 }, waitTimeout, pollInterval, "the stream once the place is free")
	close(gate)
	require.Eventually(t, func() bool { return read().State == "SUCCESS" }, waitTimeout, pollInterval, "the task's end")
	after := read()
	assert.NotContains(t, after.Errors, "closed", "%v", after.Errors)
}
