package queue_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// cutOffRegistry is a Memory whose heartbeats fail while cut is set: a
// worker cut off from its backend, as a frozen or partitioned one is.
// beats counts the heartbeats that reached the Memory.
type cutOffRegistry struct {
	*queue.Memory
	cut   atomic.Bool
	beats atomic.Int64
}

func (r *cutOffRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	if r.cut.Load() {
		return errors.New("cut off")
	}
	err := r.Memory.Heartbeat(ctx, w)
	if err == nil {
		r.beats.Add(1)
	}
	return err
}

// TestWorkerLapseStopsFlowAndFencesItsReports: a worker whose heartbeats
// stop reaching the backend for its DeadAfter (less half an interval)
// stops its flows by its own clock, before any other worker could have
// taken their tasks back; what a stopped flow reports afterwards is
// refused, and the task is handed back, its next attempt saying the
// worker was lost.
//
// The interval is far above the scheduling noise of a loaded machine: the
// worker must not lapse on its own before the test cuts it off, and its
// heartbeats (each given at most an interval) must get through before.
// The test waits for events, not for time: a heartbeat that succeeded
// after the first report (without one, the worker never lapses), then the
// flow's cancellation.
func TestWorkerLapseStopsFlowAndFencesItsReports(t *testing.T) {
	const heartbeat = 300 * time.Millisecond
	s := newSetup()
	b := &cutOffRegistry{Memory: s.mem}
	started := make(chan struct{})
	var cause atomic.Value
	s.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		if ft.Attempt > 1 {
			return "second", nil
		}
		ft.Progress.Log("before the lapse")
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		ft.Progress.Log("after the lapse")
		return "late result", nil
	}))
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
		Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Logger: slog.New(slog.DiscardHandler),
	}))
	id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 3})
	select {
	case <-started:
	case <-time.After(waitLong):
		require.FailNow(t, "the flow did not start")
	}
	require.Eventually(t, func() bool {
		snap, _, err := s.store.Snapshot(context.Background(), id)
		require.NoError(t, err)
		return len(snap.Details.StepResults) > 0
	}, waitLong, 5*time.Millisecond, "the first report was not recorded")
	beats := b.beats.Load()
	require.Eventually(t, func() bool { return b.beats.Load() > beats }, waitLong, 5*time.Millisecond,
		"no heartbeat reached the backend after the first report")
	require.Nil(t, cause.Load(), "the worker lapsed before it was cut off: heartbeats stalled for %v", heartbeat*queue.MissedBeats)
	b.cut.Store(true)
	require.Eventually(t, func() bool { return cause.Load() != nil }, waitLong, 5*time.Millisecond,
		"the flow's context was not cancelled while the worker was cut off")
	assert.ErrorContains(t, cause.Load().(error), "heartbeats lapsed")
	b.cut.Store(false)

	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult), "the late result of the first attempt is not recorded")
	msgs := logMessages(snap)
	assert.Contains(t, msgs, "before the lapse")
	assert.NotContains(t, msgs, "after the lapse", "a report after the lapse is refused")
	assert.Contains(t, msgs, "attempt 2 of 3 starts: the worker of attempt 1 was lost")
}

func logMessages(snap progress.Snapshot) []string {
	var msgs []string
	for _, s := range snap.Details.StepResults {
		msgs = append(msgs, s.Message)
	}
	return msgs
}
