package queuetest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// waitResult is what a Wait returned.
type waitResult struct {
	info *queue.TaskInfo
	err  error
}

// runWait checks Broker.Wait: the terminal snapshot and the task's
// record, at once for a task that has ended, from the live feed for one
// that ends later.
func runWait(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	ctx := context.Background()
	bounded := func(t *testing.T) context.Context {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, long)
		t.Cleanup(cancel)
		return c
	}

	t.Run("AlreadyEnded", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("quick", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
		w := h.start(queue.WorkerConfig{})
		id := h.enqueue("quick", `{"q":1}`, queue.EnqueueOptions{})
		h.waitTerminal(id)
		w.stop() // nothing moves any more: Wait must answer from what is stored
		info, err := h.broker.Wait(bounded(t), id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, info.Snapshot.State)
		assert.JSONEq(t, `"done"`, string(info.Snapshot.Details.FinalResult))
		require.NotNil(t, info.Task)
		assert.Equal(t, "quick", info.Task.Flow)
		assert.Equal(t, 1, info.Task.Attempt)
		_, last, err := h.store.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, last, info.LastEventID)
	})

	t.Run("Cancelled", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("never-run")
		id := h.enqueue("never-run", "", queue.EnqueueOptions{})
		require.NoError(t, h.broker.Cancel(ctx, id))
		info, err := h.broker.Wait(bounded(t), id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, info.Snapshot.State)
		assert.Equal(t, queue.StatusCancelled, info.Snapshot.Details.Status)
	})

	t.Run("EndsLater", func(t *testing.T) {
		h := newHarness(t, newBackends)
		base := h.goroutineBaseline()
		release := make(chan struct{})
		started := make(chan struct{})
		h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			ft.Progress.Log("begun")
			close(started)
			<-release
			ft.Progress.Progress(90, "almost")
			return map[string]int{"n": 7}, nil
		}))
		w := h.start(queue.WorkerConfig{})
		id := h.enqueue("slow", "", queue.EnqueueOptions{})
		done := make(chan waitResult, 1)
		go func() {
			info, err := h.broker.Wait(bounded(t), id)
			done <- waitResult{info, err}
		}()
		waitFor(t, started, "the flow to start")
		select {
		case r := <-done:
			require.FailNow(t, "Wait returned before the task ended", "%+v", r)
		case <-time.After(short):
		}
		close(release)
		r := waitFor(t, done, "Wait to return")
		require.NoError(t, r.err)
		assert.Equal(t, progress.StateSuccess, r.info.Snapshot.State)
		assert.JSONEq(t, `{"n":7}`, string(r.info.Snapshot.Details.FinalResult))
		assert.Equal(t, []string{"begun"}, stepMessages(r.info.Snapshot), "the whole snapshot")
		assert.Equal(t, h.snapshot(id), r.info.Snapshot, "as the store holds it")
		require.NotNil(t, r.info.Task)
		assert.Equal(t, "slow", r.info.Task.Flow)
		w.stop()
		requireGoroutinesSettle(t, base)
	})

	t.Run("ContextEndsFirst", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("nobody-runs-it")
		base := h.goroutineBaseline()
		id := h.enqueue("nobody-runs-it", "", queue.EnqueueOptions{})
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		info, err := h.broker.Wait(short, id)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Nil(t, info)
		requireGoroutinesSettle(t, base)
	})

	t.Run("UnknownTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		for _, id := range []string{queue.NewID(), "not a valid id"} {
			info, err := h.broker.Wait(bounded(t), id)
			assert.ErrorIs(t, err, queue.ErrNotFound, "id %q", id)
			assert.Nil(t, info)
		}
	})

	t.Run("SnapshotJSONUnchanged", func(t *testing.T) {
		// What Wait returns encodes as the stored snapshot does, so that
		// the HTTP layer answers the same JSON with or without a wait.
		h := newHarness(t, newBackends)
		h.declare("never-run")
		id := h.enqueue("never-run", "", queue.EnqueueOptions{})
		require.NoError(t, h.broker.Cancel(ctx, id))
		info, err := h.broker.Wait(bounded(t), id)
		require.NoError(t, err)
		got, err := json.Marshal(info.Snapshot)
		require.NoError(t, err)
		want, err := json.Marshal(h.snapshot(id))
		require.NoError(t, err)
		assert.JSONEq(t, string(want), string(got))
	})
}
