package redisbackend_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// signalHandler is a slog.Handler that closes seen at the first record
// with message msg, and drops every record.
type signalHandler struct {
	msg  string
	once *sync.Once
	seen chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h signalHandler) WithGroup(string) slog.Handler            { return h }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

// TestReportsKeptAcrossShortRedisRestart: a flow reports while Redis is
// down for less than its worker's liveness window. The reports could not
// be sent, so the worker's reporter sends them again once Redis is back:
// each is in the task's steps once, in order. The test waits for events,
// not for time: Redis refusing connections (a probe's Append fails with
// progress.ErrNotSent), the flow's reports made, the reporter retrying.
func TestReportsKeptAcrossShortRedisRestart(t *testing.T) {
	t.Parallel()
	q := newOutageQueue(t)
	const lines = 5
	started, down, reported, up := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	q.reg.MustRegister("lines", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		ft.Progress.Log("before")
		close(started)
		for _, wait := range []chan struct{}{down, up} {
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if wait == down {
				for i := range lines {
					ft.Progress.Log(fmt.Sprintf("down %d", i))
				}
				close(reported)
			}
		}
		ft.Progress.Log("after")
		return "done", nil
	}))
	retrying := signalHandler{msg: "flows: progress event not sent; retrying", once: new(sync.Once), seen: make(chan struct{})}
	cfg := q.workerConfig("", 2*time.Second) // a liveness window of seconds: longer than the outage
	cfg.Logger = slog.New(retrying)
	startWorker(t, queue.NewWorker(q.b, q.b, cfg))
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()

	id, err := q.broker.Enqueue(ctx, "lines", nil, queue.EnqueueOptions{MaxAttempts: 1})
	require.NoError(t, err)
	waitFor(t, started, "the flow did not start")
	eventually(t, func() bool {
		snap, _, err := q.b.Snapshot(ctx, id)
		return err == nil && len(snap.Details.StepResults) == 1
	}, "the first report was not recorded")

	q.srv.Stop()
	// Once an Append fails unsent, the client's connection is gone: the
	// flow's reports cannot be on their way as Redis stops.
	probe := newTask().ID
	eventually(t, func() bool {
		_, err := q.b.Append(ctx, probe, progress.LogEvent("probe"))
		return errors.Is(err, progress.ErrNotSent)
	}, "Redis still answers")
	close(down)
	waitFor(t, reported, "the flow did not report")
	waitFor(t, retrying.seen, "the reporter did not retry")
	q.srv.Restart()
	close(up)

	snap, msgs := q.waitEnded(ctx, t, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	want := []string{"before"}
	for i := range lines {
		want = append(want, fmt.Sprintf("down %d", i))
	}
	want = append(want, "after")
	assert.Equal(t, want, msgs, "every report once, in order, across the restart")
}

// waitFor waits for c to be closed, failing the test with msg if it is
// not in time.
func waitFor(t *testing.T, c <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(waitLimit):
		require.FailNow(t, msg)
	}
}
