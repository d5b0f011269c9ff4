package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/notify"
)

// flakyReceiver is a webhook receiver for the page test: it refuses every
// delivery about web_search_flow (400), and answers the first delivery
// about any other flow 500 and holds the second until released.
type flakyReceiver struct {
	srv     *httptest.Server
	release chan struct{}

	mu   sync.Mutex
	seen map[string]int // deliveries per webhook-id
}

func newFlakyReceiver(t *testing.T, secret string) *flakyReceiver {
	t.Helper()
	v, err := notify.NewVerifier(secret)
	require.NoError(t, err)
	rc := &flakyReceiver{release: make(chan struct{}), seen: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := v.VerifyRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var event struct {
			Data struct {
				Flow string `json:"flow"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &event)
		if event.Data.Flow == exampleflows.WebSearchFlowName {
			http.Error(w, "unknown flow", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		id := r.Header.Get(notify.HeaderID)
		rc.seen[id]++
		n := rc.seen[id]
		rc.mu.Unlock()
		switch n {
		case 1:
			http.Error(w, "busy", http.StatusInternalServerError)
		case 2:
			select {
			case <-rc.release:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(func() {
		select {
		case <-rc.release:
		default:
			close(rc.release)
		}
		rc.srv.CloseClientConnections()
		rc.srv.Close()
	})
	return rc
}

// TestDemoPageNotifications: each finished card shows whether its
// notifications were sent, are being retried or failed, in words, and a
// server without notifications shows nothing of them.
func TestDemoPageNotifications(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	artifacts := artifactsDir(t)

	t.Run("retrying, then sent; and failed with the reason", func(t *testing.T) {
		secret := notify.NewSecret()
		rc := newFlakyReceiver(t, secret)
		srv := startPageServer(t, 10*time.Millisecond, time.Millisecond, func(c *config) {
			c.Notify = notifications.Config{WebhookURL: rc.srv.URL + "/hook", Secret: secret, AllowPrivate: true}
		})
		p := openPage(t, browser, srv.URL, artifacts)

		poem := p.startFlow(exampleflows.PoemFlowName, nil)
		card := p.waitCard(poem, "the poem's webhook being retried",
			`c.state === 'SUCCESS' && c.notifications.length === 1 && c.notifications[0].delivery === 'retrying'`)
		assert.True(t, card.NotifyShown)
		n := card.Notifications[0]
		assert.Equal(t, "webhook", n.Channel)
		assert.True(t, strings.HasPrefix(n.Text, "webhook: retrying"), n.Text)
		assert.Contains(t, n.Text, "attempt 1 failed: webhook POST "+rc.srv.URL+"/hook: 500 Internal Server Error: busy; retrying in")
		p.screenshot("notification-retrying")
		close(rc.release)
		card = p.waitCard(poem, "the poem's webhook sent", `c.notifications.length === 1 && c.notifications[0].delivery === 'sent'`)
		assert.Equal(t, "webhook: sent (attempt 2)", card.Notifications[0].Text)

		search := p.startFlow(exampleflows.WebSearchFlowName, map[string]string{"question": "Why is the sky blue?"})
		card = p.waitCard(search, "the search's webhook failed", `c.notifications.length === 1 && c.notifications[0].delivery === 'failed'`)
		assert.Contains(t, card.Notifications[0].Text, "webhook: failed")
		assert.Contains(t, card.Notifications[0].Text, "400 Bad Request: unknown flow")
		p.screenshot("notification-failed")

		announced := eval[string](p, `document.getElementById('announcer').textContent`)
		assert.Contains(t, announced, "webhook notification", "the change was announced to screen readers")
	})

	t.Run("no notifications configured: nothing shown", func(t *testing.T) {
		srv := startPageServer(t, 10*time.Millisecond, time.Millisecond)
		p := openPage(t, browser, srv.URL, artifacts)
		id := p.startFlow(exampleflows.PoemFlowName, nil)
		p.waitCard(id, "the poem's SUCCESS", `c.state === 'SUCCESS'`)
		resp, err := http.Get(srv.URL + "/notifications/" + id + "/")
		require.NoError(t, err)
		defer resp.Body.Close()
		var answer notificationsAnswer
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&answer))
		assert.False(t, answer.Enabled)
		p.waitFor("the page to have asked", `performance.getEntriesByType('resource').some((e) => e.name.includes('/notifications/'))`)
		assert.False(t, p.card(id).NotifyShown)
	})
}
