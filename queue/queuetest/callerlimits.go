package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runCallerLimits checks BrokerConfig.CallerLimits: the start rate and the
// cap on waiting tasks of each caller, kept by the backend so that every
// Broker on it shares them.
func runCallerLimits(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	ctx := context.Background()
	broker := func(h *harness, lim queue.CallerLimits) *queue.Broker {
		return queue.NewBroker(h.backend, h.store, queue.BrokerConfig{Registry: h.reg, CallerLimits: lim, Logger: quiet})
	}
	as := func(caller string) queue.EnqueueOptions { return queue.EnqueueOptions{Caller: caller, Owner: caller} }
	// refused checks that err is a refusal by limit and returns it.
	refused := func(t *testing.T, err error, limit string) *queue.CallerLimitError {
		t.Helper()
		require.ErrorIs(t, err, queue.ErrCallerLimit)
		var le *queue.CallerLimitError
		require.True(t, errors.As(err, &le), "%T is not a *queue.CallerLimitError", err)
		assert.Equal(t, limit, le.Limit)
		return le
	}

	t.Run("StartRate", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		const burst = 5
		b := broker(h, queue.CallerLimits{Starts: burst, Per: time.Hour})
		other := broker(h, queue.CallerLimits{Starts: burst, Per: time.Hour})
		var ids []string
		for i := range burst {
			id, err := b.Enqueue(ctx, "poem", nil, as("alice"))
			require.NoError(t, err, "start %d of the burst", i+1)
			ids = append(ids, id)
		}
		for _, over := range []*queue.Broker{b, other} {
			id, err := over.Enqueue(ctx, "poem", nil, as("alice"))
			le := refused(t, err, queue.LimitStarts)
			assert.Empty(t, id)
			interval := time.Hour / burst
			assert.Greater(t, le.RetryAfter, interval-time.Minute, "the next start is due one interval after the burst")
			assert.LessOrEqual(t, le.RetryAfter, interval)
		}
		bobs, err := b.Enqueue(ctx, "poem", nil, as("bob"))
		require.NoError(t, err, "another caller has a rate of its own")
		for range 2 * burst {
			_, err := b.Enqueue(ctx, "poem", nil, queue.EnqueueOptions{})
			require.NoError(t, err, "no caller, no limit")
		}
		var got []string
		for len(got) < burst+1+2*burst {
			for _, l := range fetch(t, h.backend, 20, time.Minute) {
				got = append(got, l.Task.ID)
			}
		}
		assert.Subset(t, got, append(ids, bobs))
		requireNothingReady(t, h.backend)
	})

	t.Run("RateFinerThanTheClock", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		b := broker(h, queue.CallerLimits{Starts: 1 << 30, Per: time.Second})
		for range 3 {
			h.enqueueWith(b, "alice", queue.EnqueueOptions{})
		}
	})

	t.Run("MaxPending", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		b := broker(h, queue.CallerLimits{MaxPending: 3})
		var ids []string
		for range 2 {
			ids = append(ids, h.enqueueWith(b, "alice", queue.EnqueueOptions{}))
		}
		ids = append(ids, h.enqueueWith(b, "alice", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)}))
		_, err := b.Enqueue(ctx, "poem", nil, as("alice"))
		refused(t, err, queue.LimitPending)
		h.enqueueWith(b, "bob", queue.EnqueueOptions{})

		// A task leased by a worker no longer waits; nor does a
		// cancelled one.
		l := fetchOne(t, h.backend, time.Minute)
		if l.Task.Owner != "alice" {
			l = fetchOne(t, h.backend, time.Minute)
		}
		require.Equal(t, "alice", l.Task.Owner)
		ids = append(ids, h.enqueueWith(b, "alice", queue.EnqueueOptions{}))
		_, err = b.Enqueue(ctx, "poem", nil, as("alice"))
		refused(t, err, queue.LimitPending)
		require.NoError(t, h.broker.Cancel(ctx, ids[2]))
		h.enqueueWith(b, "alice", queue.EnqueueOptions{})
		_, err = b.Enqueue(ctx, "poem", nil, as("alice"))
		refused(t, err, queue.LimitPending)
	})

	t.Run("KeyedRepeatIsNotAnotherTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		b := broker(h, queue.CallerLimits{MaxPending: 1, Starts: 100, Per: time.Hour})
		first := h.enqueueWith(b, "alice", queue.EnqueueOptions{IdempotencyKey: "k"})
		again := h.enqueueWith(b, "alice", queue.EnqueueOptions{IdempotencyKey: "k"})
		assert.Equal(t, first, again, "the repeat of a keyed start is the task already counted")
		_, err := b.Enqueue(ctx, "poem", json.RawMessage(`{}`), queue.EnqueueOptions{Caller: "alice", Owner: "alice", IdempotencyKey: "k2"})
		refused(t, err, queue.LimitPending)
	})

	t.Run("NegativeLimitsPanic", func(t *testing.T) {
		h := newHarness(t, newBackends)
		assert.Panics(t, func() { broker(h, queue.CallerLimits{Starts: -1}) })
	})
}

// enqueueWith enqueues a poem task with b as caller (who is also the
// owner), with the other options of opts, and returns its id.
func (h *harness) enqueueWith(b *queue.Broker, caller string, opts queue.EnqueueOptions) string {
	h.t.Helper()
	opts.Caller, opts.Owner = caller, caller
	id, err := b.Enqueue(context.Background(), "poem", nil, opts)
	require.NoError(h.t, err, "Enqueue as %s", caller)
	return id
}
