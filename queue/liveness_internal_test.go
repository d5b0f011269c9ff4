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

// TestLapseCause: a worker that sent MissedBeats-1 heartbeats after its
// last confirmed one, before it lapsed, stops its runs as cut off from
// the backend (errBackendUnreachable, still a lapse for the fences); one
// that sent fewer, the heartbeats sent after the lapse aside, as frozen
// (errWorkerLapsed). A confirmed heartbeat starts the count again.
func TestLapseCause(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after int // heartbeats sent before and after the lapse
		want          error
	}{
		{"none sent", 0, 0, errWorkerLapsed},
		{"one sent, then frozen", 1, 0, errWorkerLapsed},
		{"one sent, then the rest on waking", 1, 3, errWorkerLapsed},
		{"all of the window sent", MissedBeats - 1, 0, errBackendUnreachable},
		{"all of the window sent, and more after", MissedBeats - 1, 2, errBackendUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
				WorkerConfig{Logger: slog.New(slog.DiscardHandler), Heartbeat: time.Hour})
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			j := &job{w: w, task: &Task{ID: "t"}}
			fctx := j.flowContext(ctx, cancel)
			w.live.confirm(time.Now())
			defer w.live.stop()
			for range tc.before {
				w.live.trying(time.Now())
			}
			w.live.until.Store(int64(time.Since(w.live.epoch)) - 1) // lapsed
			for range tc.after {
				w.live.trying(time.Now())
			}
			require.Error(t, fctx.Err())
			assert.Equal(t, tc.want, context.Cause(fctx))
			assert.ErrorIs(t, context.Cause(fctx), errWorkerLapsed, "a lapse for the fences")
		})
	}
}

// TestConfirmAfterLapseTellsCause: a heartbeat that gets through after
// the lapse stops the runs of before with the lapse's cause, then starts
// the count again.
func TestConfirmAfterLapseTellsCause(t *testing.T) {
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler), Heartbeat: time.Hour})
	defer w.live.stop()
	w.live.confirm(time.Now())
	for range MissedBeats - 1 {
		w.live.trying(time.Now())
	}
	w.live.until.Store(-1)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	defer w.untrack("t", w.track("t", cancel))
	w.live.trying(time.Now()) // sent after the lapse; gets through
	w.live.confirm(time.Now())
	assert.Equal(t, errBackendUnreachable, context.Cause(ctx))
	assert.Zero(t, w.live.tries.Load(), "counted again from the confirmed heartbeat")
	assert.Equal(t, errWorkerLapsed, w.live.cause())
}

// TestAwaitContact: a lapsed worker's wait for contact ends when a
// heartbeat gets through (true), or when its context ends or the
// worker's shutdown stops its flows first (false); a worker that has not
// lapsed does not wait.
func TestAwaitContact(t *testing.T) {
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler), Heartbeat: time.Hour})
	defer w.live.stop()
	ctx := context.Background()
	require.True(t, w.live.awaitContact(ctx, nil), "a worker without a heartbeat yet never lapses")
	w.live.confirm(time.Now())
	require.True(t, w.live.awaitContact(ctx, nil), "in contact")
	w.live.until.Store(-1) // lapsed

	ended, cancel := context.WithCancel(ctx)
	cancel()
	assert.False(t, w.live.awaitContact(ended, nil), "its context ended")

	got := make(chan bool, 1)
	go func() { got <- w.live.awaitContact(ctx, nil) }()
	w.live.confirm(time.Now())
	assert.True(t, <-got, "a heartbeat got through")

	w.live.until.Store(-1)
	w.stopFlows(errShutdown)
	assert.False(t, w.live.awaitContact(ctx, w.stopSignal()), "the worker stops")
}

// TestReplyBy: a heartbeat's reply is waited for an interval before the
// first one succeeded and after a lapse; else for as long as it can
// still renew the window, up to a quarter of an interval before the
// window ends (so that the next heartbeat still goes out in it), and
// never longer than the limit.
func TestReplyBy(t *testing.T) {
	const interval = time.Second
	w := NewWorker(NewMemory(MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Logger: slog.New(slog.DiscardHandler), Heartbeat: interval})
	l := w.live
	require.Equal(t, 5*interval/2, l.window)
	at := func(d time.Duration) time.Time { return l.epoch.Add(d) }
	assert.Equal(t, at(interval), l.replyBy(at(0), interval, time.Hour), "no heartbeat has succeeded yet")

	l.until.Store(int64(l.window)) // the heartbeat sent at 0 succeeded
	for _, tc := range []struct {
		name  string
		sent  time.Duration
		limit time.Duration
		want  time.Duration
	}{
		{"the next one, on time", interval, time.Hour, 9 * interval / 4},
		{"a retry just before the next tick", 3 * interval / 2, time.Hour, 5 * interval / 2},
		{"the one after, whose window ends sooner than an interval", 2 * interval, time.Hour, 3 * interval},
		{"limited", interval, interval / 2, 3 * interval / 2},
		{"sent after the lapse", 3 * interval, time.Hour, 4 * interval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, at(tc.want), l.replyBy(at(tc.sent), interval, tc.limit))
		})
	}
}
