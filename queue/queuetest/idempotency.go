package queuetest

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runIdempotency checks EnqueueOptions.IdempotencyKey through a Broker:
// one task per key within the retention, the same id for every call,
// ErrIdempotencyConflict for another flow or other inputs.
func runIdempotency(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	ctx := context.Background()
	keyed := func(key string) queue.EnqueueOptions { return queue.EnqueueOptions{IdempotencyKey: key} }

	t.Run("SameKeySameTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		first := h.enqueue("poem", `{"topic":"roses","n":2}`, keyed("order-1"))
		assert.Equal(t, queue.IdempotentID("", "order-1"), first)
		again := h.enqueue("poem", "{\n  \"topic\": \"roses\",\n  \"n\": 2\n}", queue.EnqueueOptions{IdempotencyKey: "order-1", MaxAttempts: 9})
		assert.Equal(t, first, again, "the same key, flow and inputs (whitespace aside): the same task")
		other := h.enqueue("poem", `{"topic":"roses","n":2}`, keyed("order-2"))
		assert.NotEqual(t, first, other, "another key: another task")
		plain := h.enqueue("poem", `{"topic":"roses","n":2}`, queue.EnqueueOptions{})
		assert.NotEqual(t, first, plain, "no key: a new task each time")
		alices := h.enqueue("poem", `{"topic":"roses","n":2}`, queue.EnqueueOptions{IdempotencyKey: "order-1", Owner: "alice"})
		assert.Equal(t, queue.IdempotentID("alice", "order-1"), alices)
		assert.NotEqual(t, first, alices, "the same key from another owner: another task")

		leases := fetch(t, h.backend, 10, time.Minute)
		for len(leases) < 4 {
			leases = append(leases, fetch(t, h.backend, 10, time.Minute)...)
		}
		var ids []string
		for _, l := range leases {
			ids = append(ids, l.Task.ID)
			if l.Task.ID == first {
				assert.Equal(t, queue.DefaultMaxAttempts, l.Task.MaxAttempts, "the repeated call's options are ignored")
			}
		}
		assert.ElementsMatch(t, []string{first, other, plain, alices}, ids, "one task per owner and key")
		requireNothingReady(t, h.backend)
	})

	t.Run("ConflictEnqueuesNothing", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem", "essay")
		id := h.enqueue("poem", `{"topic":"roses"}`, keyed("k"))
		for _, tc := range []struct{ name, flow, inputs string }{
			{"other inputs", "poem", `{"topic":"tulips"}`},
			{"other flow", "essay", `{"topic":"roses"}`},
			{"another field", "poem", `{"topic":"roses","n":null}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := h.broker.Enqueue(ctx, tc.flow, json.RawMessage(tc.inputs), keyed("k"))
				require.ErrorIs(t, err, queue.ErrIdempotencyConflict)
				assert.Empty(t, got)
			})
		}
		task, err := h.backend.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "poem", task.Flow, "the first task is left as it was")
		assert.JSONEq(t, `{"topic":"roses"}`, string(task.Inputs))
		assert.Equal(t, id, fetchOne(t, h.backend, time.Minute).Task.ID)
		requireNothingReady(t, h.backend)
	})

	t.Run("ConcurrentCallsOneTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		const n = 20
		ids := make([]string, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				ids[i], errs[i] = h.broker.Enqueue(ctx, "poem", json.RawMessage(`{"topic":"roses"}`), keyed("burst"))
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			require.NoError(t, errs[i], "call %d", i)
			assert.Equal(t, queue.IdempotentID("", "burst"), ids[i], "call %d", i)
		}
		assert.Equal(t, ids[0], fetchOne(t, h.backend, time.Minute).Task.ID)
		requireNothingReady(t, h.backend)
		assert.Equal(t, progress.StatePending, h.snapshot(ids[0]).State)
		requireNoEvents(t, h, ids[0])
	})

	t.Run("EndedTaskKeepsItsKey", func(t *testing.T) {
		h := newHarness(t, newBackends)
		ran := h.registerCounting("once")
		h.start(queue.WorkerConfig{Concurrency: 1})
		id := h.enqueue("once", "", keyed("done"))
		require.Equal(t, progress.StateSuccess, h.waitTerminal(id).State)
		assert.Equal(t, id, h.enqueue("once", "", keyed("done")), "within the retention the key names the ended task")
		h.settle()
		assert.Equal(t, int32(1), ran.Load(), "and nothing runs again")
	})
}

// requireNoEvents checks that the task's log is empty: nothing recorded
// a start or an end for it.
func requireNoEvents(t *testing.T, h *harness, id string) {
	t.Helper()
	events, err := h.store.Events(context.Background(), id, "")
	require.NoError(t, err)
	assert.Empty(t, events)
}
