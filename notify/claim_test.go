package notify_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// TestCallerCannotClaimANotification: a client that starts a task over
// HTTP with the Idempotency-Key the Notifier used to give the task's
// notification, before the task ends, neither stops that notification
// nor passes its own task off as it.
func TestCallerCannotClaimANotification(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			s.reg.MustRegister("work", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
			store, ok := s.store.(progress.Backend)
			require.True(t, ok)
			api := ssehttp.New(ssehttp.Config{Queue: s.broker, Progress: store, Registry: s.reg,
				Identify: func(*http.Request) (ssehttp.Principal, error) { return ssehttp.Principal{ID: "ada"}, nil }})
			start := func(key string) (int, string) {
				req := httptest.NewRequest(http.MethodPost, "/start-task/", strings.NewReader(`{"flow": "work"}`))
				req.Header.Set("Content-Type", "application/json")
				if key != "" {
					req.Header.Set(ssehttp.IdempotencyKeyHeader, key)
				}
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				return rec.Code, rec.Body.String()
			}
			code, body := start("")
			require.Equal(t, http.StatusOK, code, body)
			id := strings.Split(body, `"`)[3]
			code, body = start("flows.notify:" + notify.ID(id, "webhook"))
			require.Equal(t, http.StatusOK, code, body)
			claimed := strings.Split(body, `"`)[3]

			s.run(t, 10*time.Millisecond, n.Hook())
			s.waitEnded(t, id)
			nid := notify.NotificationTaskID(notify.ID(id, "webhook"))
			info := s.waitNotification(t, nid)
			assert.Equal(t, notify.FlowName, info.Task.Flow, "the notification's task is the Notifier's")
			s.waitNotification(t, notify.NotificationTaskID(notify.ID(claimed, "webhook")))
			var about []string // the ids of the deliveries about the task
			for _, r := range rc.requests() {
				if r.ID == notify.ID(id, "webhook") {
					about = append(about, r.ID)
				}
			}
			assert.Len(t, about, 1, "the notification is delivered")
			status, err := n.Status(context.Background(), id)
			require.NoError(t, err)
			require.Len(t, status, 1)
			assert.Equal(t, nid, status[0].NotificationTaskID)
			assert.Equal(t, notify.DeliverySent, status[0].State)
		})
	}
}

// waitNotification waits for the notification task nid, which the hook
// enqueues after its task has ended, to exist and end, and returns it.
func (s *system) waitNotification(t *testing.T, nid string) *queue.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := s.broker.Task(context.Background(), nid)
		if err == nil && info.Snapshot.State.Terminal() {
			return info
		}
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			require.NoError(t, err)
		}
		require.False(t, time.Now().After(deadline), "notification task %s did not end: %v", nid, err)
		time.Sleep(10 * time.Millisecond)
	}
}
