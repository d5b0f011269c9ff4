package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/queue"
)

// TestNotificationsWhileRedisDown checks that GET /notifications/{id}/
// answers as ssehttp's routes do while the backend cannot be reached: 503
// with a Retry-After, logged as a warning (it said 503 with no
// Retry-After, logged as an error).
func TestNotificationsWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg := redisConfig(t, srv)
	cfg.Workers = 0
	var logs syncbuf.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Notify = notifications.Config{WebhookURL: "http://127.0.0.1:1/hook", Secret: notify.NewSecret(), AllowPrivate: true}
	web := startServer(t, cfg)
	srv.Stop()

	resp, err := http.Get(web.URL + "/notifications/" + queue.NewID() + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, notificationsRetryAfter, resp.Header.Get("Retry-After"))
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, "the backend cannot be reached", body["error"])
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "notifications:") {
			line = l
		}
	}
	assert.Contains(t, line, "level=WARN", "logged as a warning: %q", line)
	assert.Contains(t, line, "backend unavailable")
	assert.False(t, bytes.Contains([]byte(logs.String()), []byte("level=ERROR msg=notifications")))
}
