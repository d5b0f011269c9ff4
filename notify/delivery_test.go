package notify_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
)

// notifyOne enqueues the notifications of the sample task and returns the
// id of the one notification task (the notifier has one channel).
func notifyOne(t *testing.T, n *notify.Notifier) string {
	t.Helper()
	ended := *sampleNotification("")
	ended.ID, ended.Channel = "", ""
	ids, err := n.Notify(context.Background(), ended)
	require.NoError(t, err)
	require.Len(t, ids, 1)
	return ids[0]
}

// TestDeliveryRetriedUntilAccepted: a receiver that answers 500 and then
// 200 gets two requests with the same webhook-id, both signed, and
// accepts exactly one; the notification task succeeds on its second
// attempt.
func TestDeliveryRetriedUntilAccepted(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			rc.setRespond(func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					http.Error(w, "try later", http.StatusInternalServerError)
				}
			})
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}, MaxAttempts: 3})
			s.run(t, 20*time.Millisecond)
			id := notifyOne(t, n)
			info := s.waitEnded(t, id)
			require.Equal(t, progress.StateSuccess, info.Snapshot.State, info.Snapshot.Details.Status)
			assert.Equal(t, 2, info.Task.Attempt)
			assert.Equal(t, notify.FlowName, info.Task.Flow)

			got := rc.requests()
			require.Len(t, got, 2)
			assert.Equal(t, got[0].ID, got[1].ID, "the same webhook-id on the retry")
			assert.Equal(t, notify.ID("0123456789abcdef0123456789abcdef", "webhook"), got[0].ID)
			assert.Equal(t, got[0].Body, got[1].Body, "the same body")
			for _, r := range got {
				assert.NoError(t, r.VerifyErr)
			}
			assert.Len(t, rc.accepted(), 1, "exactly one accepted delivery")
			require.NotEmpty(t, info.Snapshot.Details.StepResults)
			assert.Contains(t, info.Snapshot.Details.StepResults[0].Message, "attempt 1 failed: webhook POST "+rc.srv.URL+"/hook: 500 Internal Server Error: try later; retrying")
			var result map[string]any
			require.NoError(t, json.Unmarshal(info.Snapshot.Details.FinalResult, &result))
			assert.Equal(t, got[0].ID, result["id"])
			assert.Equal(t, "webhook", result["channel"])
		})
	}
}

// TestDeliveryRefusedIsDeadLettered: a 4xx answer is not retried; the
// notification task fails at once and is buried with the answer as its
// reason.
func TestDeliveryRefusedIsDeadLettered(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) {
				http.Error(w, "unknown event type", http.StatusUnprocessableEntity)
			})
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}, MaxAttempts: 5})
			s.run(t, 20*time.Millisecond)
			id := notifyOne(t, n)
			info := s.waitEnded(t, id)
			assert.Equal(t, progress.StateFailure, info.Snapshot.State)
			assert.Equal(t, 1, info.Task.Attempt, "not retried")
			assert.Len(t, rc.requests(), 1)
			d := s.dead(t, id)
			assert.Equal(t, "webhook POST "+rc.srv.URL+"/hook: 422 Unprocessable Entity: unknown event type", d.Reason)
			assert.Equal(t, notify.FlowName, d.Flow)
		})
	}
}

// TestDeliveryToADownReceiverIsDeadLettered: connection errors are retried
// until the attempts are spent, then the notification is buried with a
// reason that says what happened.
func TestDeliveryToADownReceiverIsDeadLettered(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := ln.Addr().String()
			require.NoError(t, ln.Close())
			w, err := notify.NewWebhook(notify.WebhookConfig{URL: "http://" + addr + "/hook", Secret: notify.NewSecret(), AllowPrivate: true, Logger: s.logger})
			require.NoError(t, err)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{w}, MaxAttempts: 3})
			s.run(t, 10*time.Millisecond)
			id := notifyOne(t, n)
			info := s.waitEnded(t, id)
			assert.Equal(t, progress.StateFailure, info.Snapshot.State)
			assert.Equal(t, 3, info.Task.Attempt)
			d := s.dead(t, id)
			assert.True(t, strings.HasPrefix(d.Reason, "failed after 3 attempts: webhook POST http://"+addr+"/hook: "), d.Reason)
			assert.Contains(t, d.Reason, "connection refused")
		})
	}
}

// TestDeliveryHonoursRetryAfter: a 429 with Retry-After delays the retry
// by the asked time even though the worker's backoff is shorter.
func TestDeliveryHonoursRetryAfter(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			rc.setRespond(func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
				}
			})
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}, MaxAttempts: 3})
			s.run(t, time.Millisecond)
			id := notifyOne(t, n)
			info := s.waitEnded(t, id)
			require.Equal(t, progress.StateSuccess, info.Snapshot.State, info.Snapshot.Details.Status)
			require.NotEmpty(t, info.Snapshot.Details.StepResults)
			assert.True(t, strings.HasSuffix(info.Snapshot.Details.StepResults[0].Message, "429 Too Many Requests; retrying in 1s"), info.Snapshot.Details.StepResults[0].Message)
			got := rc.requests()
			require.Len(t, got, 2)
			t1, t2 := parseUnix(t, got[0].Timestamp), parseUnix(t, got[1].Timestamp)
			assert.GreaterOrEqual(t, t2.Sub(t1), time.Second, "webhook-timestamp is each attempt's own, a second apart at least")
		})
	}
}

func parseUnix(t *testing.T, s string) time.Time {
	t.Helper()
	var sec int64
	require.NoError(t, json.Unmarshal([]byte(s), &sec))
	return time.Unix(sec, 0)
}
