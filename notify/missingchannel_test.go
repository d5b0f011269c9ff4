package notify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// lackingWorkerRegistry returns the registry of a worker whose Notifier
// has an "email" channel only: it lacks the webhook's settings.
func lackingWorkerRegistry(t *testing.T, s *system) *registry.Registry {
	t.Helper()
	n, err := notify.New(notify.Config{Queue: s.broker, Channels: []notify.Channel{&recordingChannel{name: "email"}}, Logger: s.logger})
	require.NoError(t, err)
	reg := registry.New()
	require.NoError(t, n.Register(reg))
	return reg
}

const lackingWebhook = `notify: this worker lacks the settings of channel "webhook"`

// TestWorkerLackingTheChannelLeavesItToAnother: a worker without the
// channel's settings (an old worker in a rolling deploy that adds the
// channel) fails its attempt with a status line that says so, and the
// notification is retried; a worker that has the settings delivers it.
func TestWorkerLackingTheChannelLeavesItToAnother(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}, MaxAttempts: 10})
			stopOld := s.runWith(t, lackingWorkerRegistry(t, s), 10*time.Millisecond)
			id := notifyOne(t, n)
			waitStep(t, s, id, "attempt 1 failed: "+lackingWebhook+"; retrying in ")
			stopOld() // the old worker leaves; a worker with the webhook comes
			s.run(t, 10*time.Millisecond)

			info := s.waitEnded(t, id)
			require.Equal(t, progress.StateSuccess, info.Snapshot.State, info.Snapshot.Details.Status)
			assert.GreaterOrEqual(t, info.Task.Attempt, 2)
			assert.Len(t, rc.accepted(), 1)
		})
	}
}

// TestChannelNoWorkerHasIsDeadLettered: when no worker has the channel's
// settings, the notification's attempts are spent and it is
// dead-lettered with a reason that says why, as Status reports it.
func TestChannelNoWorkerHasIsDeadLettered(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}, MaxAttempts: 3})
			t.Cleanup(s.runWith(t, lackingWorkerRegistry(t, s), 10*time.Millisecond))
			id := notifyOne(t, n)

			info := s.waitEnded(t, id)
			assert.Equal(t, progress.StateFailure, info.Snapshot.State)
			assert.Equal(t, 3, info.Task.Attempt)
			want := "failed after 3 attempts: " + lackingWebhook
			assert.Equal(t, want, s.dead(t, id).Reason)
			assert.Empty(t, rc.requests())
			status, err := n.Status(context.Background(), "0123456789abcdef0123456789abcdef")
			require.NoError(t, err)
			require.Len(t, status, 1)
			assert.Equal(t, notify.DeliveryFailed, status[0].State)
			assert.Equal(t, want, status[0].Detail)
		})
	}
}

// waitStep waits until a log step of task id starts with prefix.
func waitStep(t *testing.T, s *system, id, prefix string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := s.broker.Task(context.Background(), id)
		require.NoError(t, err)
		for _, st := range info.Snapshot.Details.StepResults {
			if st.Type == progress.StepLog && strings.HasPrefix(st.Message, prefix) {
				return
			}
		}
		if info.Snapshot.State.Terminal() || time.Now().After(deadline) {
			t.Fatalf("task %s has no step %q: %+v", id, prefix, info.Snapshot)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWorkerWithoutNotifierLeavesTheNotification: a worker that has no
// Notifier at all (an old worker in a rolling deploy that adds
// notifications, or one not given the channels' settings) does not
// fail a notification task it takes as an unknown flow: it hands it
// back unrun, not counted, and a worker with the Notifier delivers it
// on its first attempt.
func TestWorkerWithoutNotifierLeavesTheNotification(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
			stopOld := s.runWith(t, registry.New(), 10*time.Millisecond) // no flows.notify
			id := notifyOne(t, n)
			deadline := time.Now().Add(waitLimit)
			for {
				info, err := s.broker.Task(context.Background(), id)
				require.NoError(t, err)
				require.False(t, info.Snapshot.State.Terminal(), "the worker without a Notifier ended it: %+v", info.Snapshot)
				if info.Task.HandBacks >= 2 {
					break
				}
				require.True(t, time.Now().Before(deadline), "the worker without a Notifier did not hand it back: %+v", info.Task)
				time.Sleep(5 * time.Millisecond)
			}
			stopOld()
			s.run(t, 10*time.Millisecond)

			info := s.waitEnded(t, id)
			require.Equal(t, progress.StateSuccess, info.Snapshot.State, info.Snapshot.Details.Status)
			assert.Equal(t, 1, info.Task.Attempts(), "the hand-backs spent no attempt")
			assert.Len(t, rc.accepted(), 1)
		})
	}
}
