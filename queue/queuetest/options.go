package queuetest

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runOptions checks EnqueueOptions at their bounds: the largest values
// are kept as given and run, and a negative one, or a RunAt out of the
// range of a task's record, is refused before the backend sees anything,
// the same way on every backend.
func runOptions(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("LargestValuesRun", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("poem", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, flow.Permanent(assert.AnError)
			}
			return "ok", nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("poem", `{}`, queue.EnqueueOptions{MaxAttempts: math.MaxInt, Timeout: time.Duration(math.MaxInt64)})
		task, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, math.MaxInt, task.MaxAttempts)
		assert.Equal(t, time.Duration(math.MaxInt64), task.Timeout)
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	})

	t.Run("LateRunAtKept", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		runAt := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
		id := h.enqueue("poem", `{}`, queue.EnqueueOptions{RunAt: runAt})
		task, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err, "the task is kept until it is due")
		assert.True(t, runAt.Equal(task.RunAt), "RunAt %v", task.RunAt)
		assert.Equal(t, progress.StatePending, h.snapshot(id).State)
		requireNothingReady(t, h.backend)
	})

	t.Run("ImpossibleValuesRefused", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.declare("poem")
		for _, opts := range []queue.EnqueueOptions{{MaxAttempts: -1}, {Timeout: -time.Nanosecond},
			// Times a task's record cannot hold (nanoseconds since 1970
			// in an int64): on Redis they read back as other times.
			{RunAt: time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)}, {RunAt: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}} {
			id, err := h.broker.Enqueue(context.Background(), "poem", nil, opts)
			require.ErrorIs(t, err, queue.ErrInvalidOptions, "%+v", opts)
			assert.Empty(t, id)
		}
		if dr, ok := h.backend.(queue.DepthReader); ok {
			d, err := dr.Depth(context.Background())
			require.NoError(t, err)
			assert.Zero(t, d, "nothing enqueued")
		}
	})
}
