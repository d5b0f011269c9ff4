package notify_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/queue"
)

// finishedSample is what a finish hook is given about the sample task.
func finishedSample() queue.Finished {
	n := sampleNotification("")
	return queue.Finished{
		Task:      &queue.Task{ID: n.TaskID, Flow: n.Flow, Attempt: 1, EnqueuedAt: n.EnqueuedAt, Owner: "ada"},
		Snapshot:  n.Snapshot,
		StartedAt: n.StartedAt,
		EndedAt:   n.FinishedAt,
	}
}

// TestHookRunTwiceEnqueuesOnce: a finish hook run again for the same task
// (a worker died before acknowledging it), even with other timings,
// enqueues nothing more; the receiver gets one delivery.
func TestHookRunTwiceEnqueuesOnce(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
			hook := n.Hook()
			f := finishedSample()
			require.NoError(t, hook(context.Background(), f))
			again := f
			again.FoundEnded, again.EndedAt = true, f.EndedAt.Add(time.Minute)
			again.Task = &queue.Task{ID: f.Task.ID, Flow: f.Task.Flow, Attempt: 2, EnqueuedAt: f.Task.EnqueuedAt, Owner: "ada"}
			require.NoError(t, hook(context.Background(), again), "the second run finds the notification queued")
			ids, err := n.Notify(context.Background(), notify.Ended(f))
			require.NoError(t, err)
			require.Len(t, ids, 1)
			assert.Equal(t, notify.NotificationTaskID(notify.ID(f.Task.ID, "webhook")), ids[0])
			info, err := s.broker.Task(context.Background(), ids[0])
			require.NoError(t, err)
			assert.Equal(t, queue.InternalOwner, info.Task.Owner, "the notification is no caller's")

			s.run(t, 10*time.Millisecond)
			s.waitEnded(t, ids[0])
			time.Sleep(100 * time.Millisecond)
			assert.Len(t, rc.requests(), 1, "one delivery")
		})
	}
}

// TestStatus: Status follows a notification from queued to retrying to
// sent, and to failed with its reason.
func TestStatus(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			flaky := newReceiver(t, secret)
			release := make(chan struct{})
			flaky.setRespond(func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				<-release // hold the second attempt until the test has seen "retrying"
			})
			refusing := newReceiver(t, secret)
			refusing.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) })
			hookA, err := notify.NewWebhook(notify.WebhookConfig{Name: "flaky", URL: flaky.srv.URL, Secret: secret, AllowPrivate: true, Logger: s.logger})
			require.NoError(t, err)
			hookB, err := notify.NewWebhook(notify.WebhookConfig{Name: "refusing", URL: refusing.srv.URL, Secret: secret, AllowPrivate: true, Logger: s.logger})
			require.NoError(t, err)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{hookA, hookB}, MaxAttempts: 3})
			ctx := context.Background()
			f := finishedSample()

			status, err := n.Status(ctx, f.Task.ID)
			require.NoError(t, err)
			assert.Empty(t, status, "nothing queued yet")

			_, err = n.Notify(ctx, notify.Ended(f))
			require.NoError(t, err)
			status, err = n.Status(ctx, f.Task.ID)
			require.NoError(t, err)
			require.Len(t, status, 2)
			assert.Equal(t, notify.DeliveryQueued, status[0].State)
			assert.Equal(t, "flaky", status[0].Channel)
			assert.Equal(t, "refusing", status[1].Channel)

			s.run(t, 20*time.Millisecond)
			waitStatus := func(ch int, want notify.DeliveryState) notify.Delivery {
				t.Helper()
				deadline := time.Now().Add(waitLimit)
				for {
					status, err := n.Status(ctx, f.Task.ID)
					require.NoError(t, err)
					if status[ch].State == want {
						return status[ch]
					}
					require.False(t, time.Now().After(deadline), "channel %d: %+v, want %s", ch, status[ch], want)
					time.Sleep(5 * time.Millisecond)
				}
			}
			d := waitStatus(1, notify.DeliveryFailed)
			assert.Equal(t, "webhook POST "+refusing.srv.URL+": 403 Forbidden: no", d.Detail)
			d = waitStatus(0, notify.DeliveryRetrying)
			assert.True(t, strings.HasPrefix(d.Detail, "attempt 1 failed: webhook POST "), d.Detail)
			assert.Contains(t, d.Detail, "503 Service Unavailable: busy")
			close(release)
			d = waitStatus(0, notify.DeliverySent)
			assert.Equal(t, 2, d.Attempts)
			assert.Empty(t, d.Detail)

		})
	}
}
