package progresstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// RunRetention runs the part of the conformance suite that watches tasks
// expire: a subscription of a task whose retention passes while it is
// open ends soon after (progress.Subscriber: the channel is closed when
// the task disappears), and one of a task that keeps being written stays
// open. newBackend returns backends that drop a task about retention
// after its last write (a little later is fine); retention should be
// short, a second or two, since the suite waits for it to pass several
// times.
//
// The suite's waits are bounded by a limit far above the retention but
// shorter than a minute: a backend that finds expired tasks only by
// polling passes if it polls more often than that. Configure any poll
// interval of the backend longer (an hour), so that passing shows that
// subscriptions learn of the expiry itself:
//
//	func TestRetentionConformance(t *testing.T) {
//		progresstest.RunRetention(t, time.Second, func(t *testing.T) progress.Backend {
//			return mystore.New(mystore.Config{Retention: time.Second, PollInterval: time.Hour})
//		})
//	}
func RunRetention(t *testing.T, retention time.Duration, newBackend func(t *testing.T) progress.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b progress.Backend, retention time.Duration)
	}{
		{"SubscriptionEndsWhenTheTaskExpires", testExpiryEndsSubscription},
		{"SubscriptionOfAPendingTaskEndsWhenItExpires", testExpiryEndsPendingSubscription},
		{"WritesKeepTheSubscriptionOpen", testWritesKeepSubscription},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			require.NotNil(t, b, "newBackend returned nil")
			tt.fn(t, b, retention)
		})
	}
}

// subscriptionContext returns the context of the suite's subscriptions:
// it outlasts every wait of the suite, so that no subscription ends
// because its context did.
func subscriptionContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// requireGone checks that the task has disappeared from the store.
func requireGone(t *testing.T, b progress.Backend, taskID string) {
	t.Helper()
	_, _, err := b.Snapshot(testContext(t), taskID)
	require.ErrorIs(t, err, progress.ErrNotFound, "the task is gone once its subscription has ended")
}

// testExpiryEndsSubscription: a task with events, watched live, expires;
// the subscription ends without waiting for anything else to happen.
func testExpiryEndsSubscription(t *testing.T, b progress.Backend, _ time.Duration) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, statusEvent("working"))
	ch, err := b.Subscribe(subscriptionContext(t), id, "")
	require.NoError(t, err)
	got := receive(t, ch, 1)
	assert.Equal(t, "working", got[0].Status)

	assert.Empty(t, collect(t, ch), "nothing more is delivered, and the channel is closed once the task has expired")
	requireGone(t, b, id)
}

// testExpiryEndsPendingSubscription: a task without events (PENDING), one
// subscription from the start and one resuming after an id it has not
// reached; both end when it expires.
func testExpiryEndsPendingSubscription(t *testing.T, b progress.Backend, _ time.Duration) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	fromStart, err := b.Subscribe(subscriptionContext(t), id, "")
	require.NoError(t, err)

	other := createTask(ctx, t, b)
	future := appendOne(ctx, t, b, other, statusEvent("an id this task has not reached"))
	ahead, err := b.Subscribe(subscriptionContext(t), id, future)
	require.NoError(t, err)

	assert.Empty(t, collect(t, fromStart), "a subscription from the start")
	assert.Empty(t, collect(t, ahead), "a subscription after an id the task has not reached")
	requireGone(t, b, id)
}

// testWritesKeepSubscription: a task written more often than its
// retention lives on past it, and so does its subscription: every event
// arrives. Once the writes stop, the task expires and the subscription
// ends.
func testWritesKeepSubscription(t *testing.T, b progress.Backend, retention time.Duration) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	ch, err := b.Subscribe(subscriptionContext(t), id, "")
	require.NoError(t, err)

	// Writes spread over two and a half times the retention.
	const writes = 20
	received := make(chan []progress.Event, 1)
	go func() {
		var got []progress.Event
		for e := range ch {
			got = append(got, e)
		}
		received <- got
	}()
	for i := range writes {
		time.Sleep(retention / 8)
		_, err := b.Append(ctx, id, statusEvent(fmt.Sprintf("step %d", i)))
		if errors.Is(err, progress.ErrNotFound) {
			require.FailNow(t, "the task expired between two writes an eighth of its retention apart", "write %d", i)
		}
		require.NoError(t, err)
	}
	var got []progress.Event
	select {
	case got = <-received:
	case <-time.After(waitLimit):
		require.FailNow(t, "subscription did not end", "the task should expire once written no more")
	}
	require.Len(t, got, writes, "the subscription delivered every event before the task expired")
	for i, e := range got {
		assert.Equal(t, fmt.Sprintf("step %d", i), e.Status)
	}
	requireGone(t, b, id)
}
