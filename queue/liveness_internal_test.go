package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// TestLapseSeenWithoutTimer: once the worker has lapsed, a flow's context
// is done at its next look, before the timer that stops the runs has run
// (a process waking from a freeze runs its goroutines in any order), and
// so are the contexts derived from it; the reports of the run are
// refused.
func TestLapseSeenWithoutTimer(t *testing.T) {
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler)})
	require.NotNil(t, w.live, "a backend with a registry gives the worker a liveness")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	j := &job{w: w, task: &Task{ID: "t"}}
	j.runCtx.Store(&ctx)
	fctx := j.flowContext(ctx, cancel)
	child, stop := context.WithTimeout(fctx, time.Hour)
	defer stop()
	require.NoError(t, fctx.Err(), "a worker without a heartbeat yet never lapses")
	require.NoError(t, j.fenced())

	w.live.until.Store(-1) // lapsed; no timer is armed
	assert.ErrorIs(t, j.fenced(), ErrLeaseLost, "reports are refused")
	select {
	case <-fctx.Done():
	default:
		require.FailNow(t, "the flow's context is not done at its first look after the lapse")
	}
	assert.ErrorIs(t, context.Cause(fctx), errWorkerLapsed)
	assert.Error(t, child.Err(), "a context derived before the lapse")
}

// TestConfirmAfterLapseStopsRuns: a heartbeat sent after the worker had
// lapsed renews its liveness only once the runs of before are stopped, so
// that a frozen worker whose heartbeat goroutine runs first on waking
// does not keep them.
func TestConfirmAfterLapseStopsRuns(t *testing.T) {
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler), Heartbeat: time.Hour})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	defer w.untrack("t", w.track("t", cancel))
	w.live.confirm(time.Now())
	require.NoError(t, ctx.Err(), "a heartbeat in time stops nothing")
	w.live.until.Store(-1)
	w.live.confirm(time.Now())
	assert.ErrorIs(t, context.Cause(ctx), errWorkerLapsed, "the run of before the lapse")
	assert.False(t, w.live.lapsed(), "renewed")
	w.live.stop()
}
