package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// webhookEvent is the body of a delivery, decoded.
type webhookEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		TaskID     string            `json:"task_id"`
		Flow       string            `json:"flow"`
		Owner      *string           `json:"owner"`
		State      progress.State    `json:"state"`
		Attempts   int               `json:"attempts"`
		EnqueuedAt time.Time         `json:"enqueued_at"`
		StartedAt  time.Time         `json:"started_at"`
		FinishedAt time.Time         `json:"finished_at"`
		Snapshot   progress.Snapshot `json:"snapshot"`
	} `json:"data"`
}

// TestHookNotifiesEveryFinishedTask: with the Notifier's hook on the
// worker, each task that ends, in success or failure, gets one signed
// webhook carrying its final snapshot and its owner, when it has one;
// the notification tasks themselves get none.
func TestHookNotifiesEveryFinishedTask(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
			s.reg.MustRegister("greet", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
				t.Progress.Log("greeting")
				return "Hello!", nil
			}))
			s.reg.MustRegister("broken", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
				return nil, flow.Permanent(errors.New("model refused"))
			}))
			s.run(t, 10*time.Millisecond, n.Hook())

			ok, err := s.broker.Enqueue(context.Background(), "greet", nil, queue.EnqueueOptions{Owner: "user:ada"})
			require.NoError(t, err)
			bad, err := s.broker.Enqueue(context.Background(), "broken", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			s.waitEnded(t, ok)
			s.waitEnded(t, bad)

			events := map[string]webhookEvent{}
			deadline := time.Now().Add(waitLimit)
			for len(rc.accepted()) < 2 {
				require.False(t, time.Now().After(deadline), "two deliveries expected, got %d", len(rc.accepted()))
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // room for a wrong third one
			got := rc.requests()
			require.Len(t, got, 2, "one notification per task, none about the notifications")
			for _, r := range got {
				assert.NoError(t, r.VerifyErr)
				var e webhookEvent
				require.NoError(t, json.Unmarshal(r.Body, &e))
				events[e.Data.TaskID] = e
				assert.Equal(t, notify.ID(e.Data.TaskID, "webhook"), r.ID)
			}
			require.Contains(t, events, ok)
			require.Contains(t, events, bad)
			assert.Equal(t, "task.succeeded", events[ok].Type)
			assert.Equal(t, "greet", events[ok].Data.Flow)
			if assert.NotNil(t, events[ok].Data.Owner, "the owner, for the receiver to know whom to tell") {
				assert.Equal(t, "user:ada", *events[ok].Data.Owner)
			}
			assert.Nil(t, events[bad].Data.Owner, "no owner, no key")
			assert.Equal(t, progress.StateSuccess, events[ok].Data.State)
			assert.JSONEq(t, `"Hello!"`, string(events[ok].Data.Snapshot.Details.FinalResult))
			assert.Equal(t, "greeting", events[ok].Data.Snapshot.Details.StepResults[0].Message)
			assert.Equal(t, 1, events[ok].Data.Attempts)
			assert.False(t, events[ok].Data.StartedAt.IsZero())
			assert.False(t, events[ok].Data.FinishedAt.Before(events[ok].Data.StartedAt))
			assert.False(t, events[ok].Data.EnqueuedAt.IsZero())
			assert.Equal(t, "task.failed", events[bad].Type)
			assert.Equal(t, "model refused", events[bad].Data.Snapshot.Details.Status)
		})
	}
}

func TestEnded(t *testing.T) {
	enq := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	f := queue.Finished{
		Task:      &queue.Task{ID: "t1", Flow: "greet", Attempt: 2, EnqueuedAt: enq},
		Snapshot:  progress.Snapshot{State: progress.StateFailure, Details: progress.Details{Status: "boom"}},
		StartedAt: enq.Add(time.Second),
		EndedAt:   enq.Add(3 * time.Second),
	}
	n := notify.Ended(f)
	assert.Equal(t, "t1", n.TaskID)
	assert.Equal(t, 2, n.Attempts)
	assert.Equal(t, 2*time.Second, n.Duration())
	assert.Equal(t, "boom", n.Status())
	f.FoundEnded, f.StartedAt = true, time.Time{}
	assert.Equal(t, 1, notify.Ended(f).Attempts, "a lease that found the task ended did not run it")
	f.FoundEnded = false
	assert.Equal(t, 1, notify.Ended(f).Attempts, "nor did one that ended it without running it (cancelled, attempts spent)")
}

// TestHookTellsARequeuedTask: the notification about a task re-queued
// from the dead-letter set names the dead task (requeued_from), so that a
// receiver that was told of its failure can tie the new task's end to it;
// the dead task's own notification has no requeued_from.
func TestHookTellsARequeuedTask(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
			var runs atomic.Int32
			s.reg.MustRegister("flaky", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
				if runs.Add(1) == 1 {
					return nil, flow.Permanent(errors.New("model refused"))
				}
				return "fine", nil
			}))
			s.run(t, 10*time.Millisecond, n.Hook())

			dead, err := s.broker.Enqueue(context.Background(), "flaky", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			s.dead(t, dead)
			again, err := s.broker.Requeue(context.Background(), dead)
			require.NoError(t, err)
			s.waitEnded(t, again)

			deadline := time.Now().Add(waitLimit)
			for len(rc.accepted()) < 2 {
				require.False(t, time.Now().After(deadline), "two deliveries expected, got %d", len(rc.accepted()))
				time.Sleep(10 * time.Millisecond)
			}
			bodies := map[string]map[string]any{}
			for _, r := range rc.requests() {
				var e struct {
					Data map[string]any `json:"data"`
				}
				require.NoError(t, json.Unmarshal(r.Body, &e))
				bodies[e.Data["task_id"].(string)] = e.Data
			}
			require.Contains(t, bodies, dead)
			require.Contains(t, bodies, again)
			assert.Equal(t, dead, bodies[again]["requeued_from"])
			assert.Equal(t, "SUCCESS", bodies[again]["state"])
			assert.NotContains(t, bodies[dead], "requeued_from", "only when set")
		})
	}
}
