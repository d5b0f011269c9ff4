package ssehttp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// streamAnswer is what one stream request got: its status and type, and
// the messages of its body.
type streamAnswer struct {
	status      int
	contentType string
	messages    []sse.Message
}

// hasData reports whether an EventSource would dispatch one of the
// answer's messages.
func (a streamAnswer) hasData() bool {
	for _, m := range a.messages {
		if m.HasData {
			return true
		}
	}
	return false
}

// retry returns the answer's last "retry:" hint, or 0.
func (a streamAnswer) retry() time.Duration {
	var d time.Duration
	for _, m := range a.messages {
		if ms, err := strconv.Atoi(m.Retry); err == nil {
			d = time.Duration(ms) * time.Millisecond
		}
	}
	return d
}

// getStream sends one stream request after lastID and reads the answer
// to its end.
func getStream(ctx context.Context, t *testing.T, url, lastID string) streamAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	a := streamAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}
	r := sse.NewReader(resp.Body)
	for {
		m, err := r.Next()
		if err != nil {
			break
		}
		a.messages = append(a.messages, m)
	}
	return a
}

// TestStreamOpenedWhileRedisDown reconnects a client to a task's stream
// while Redis is shut down, as a browser whose connection dropped during
// the outage does: the answer is an event stream (200) that only holds a
// "retry:" hint, which an EventSource follows, where a 503 would have
// closed it for good. Once Redis is back, the client's reconnection with
// the same Last-Event-ID gets every event after it, once and in order.
func TestStreamOpenedWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, AppendFsync: "always"})
	b, err := redisbackend.New(srv.Client(t), redisbackend.Config{OpTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	reg := registry.New()
	web := httptest.NewServer(ssehttp.New(ssehttp.Config{
		Queue: queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg}), Progress: b, Registry: reg,
		Retry: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(web.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	for i := range 3 {
		_, err := b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("before %d", i)))
		require.NoError(t, err)
	}
	events, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	require.Len(t, events, 3)
	// The client saw the first two events; its connection dropped.
	lastID := events[1].ID
	url := web.URL + "/task-status/" + id + "/"

	srv.Stop()
	for _, mode := range []string{"", "?mode=updates"} {
		down := getStream(ctx, t, url+mode, lastID)
		require.Equal(t, http.StatusOK, down.status, "%+v", down)
		assert.Equal(t, "text/event-stream", down.contentType)
		require.Len(t, down.messages, 1, "only the hint: %+v", down.messages)
		assert.Equal(t, "50", down.messages[0].Retry)
		assert.Equal(t, []string{"task backend unavailable, reconnect in 50ms"}, down.messages[0].Comments)
		assert.False(t, down.hasData() || down.messages[0].HasID, "nothing an EventSource dispatches, and its Last-Event-ID stays")
	}
	srv.Restart()

	// The task goes on once Redis is back.
	for i := range 2 {
		appendUntilUp(ctx, t, b, id, progress.LogEvent(fmt.Sprintf("after %d", i)))
	}
	appendUntilUp(ctx, t, b, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess})

	// The client reconnects after each hint, as an EventSource does,
	// until it gets its events.
	var got streamAnswer
	for {
		got = getStream(ctx, t, url, lastID)
		require.Equal(t, http.StatusOK, got.status, "%+v", got)
		if got.hasData() {
			break
		}
		require.NoError(t, ctx.Err(), "no events after Redis came back")
		time.Sleep(got.retry())
	}
	events, err = b.Events(ctx, id, "")
	require.NoError(t, err)
	require.Len(t, events, 6)
	var want, ids []string
	for _, ev := range events[2:] {
		want = append(want, ev.ID)
	}
	for _, m := range got.messages {
		if m.HasData {
			ids = append(ids, m.ID)
		}
	}
	assert.Equal(t, want, ids, "every event after the client's Last-Event-ID, once and in order")
}

// appendUntilUp appends e to the task, trying again while Redis cannot
// be reached (it is coming back from a restart).
func appendUntilUp(ctx context.Context, t *testing.T, b *redisbackend.Backend, id string, e progress.Event) {
	t.Helper()
	for {
		_, err := b.Append(ctx, id, e)
		if err == nil {
			return
		}
		require.ErrorIs(t, err, queue.ErrUnavailable, "the only failure expected is an unreachable Redis")
		require.NoError(t, ctx.Err(), "Redis did not come back")
		time.Sleep(20 * time.Millisecond)
	}
}
