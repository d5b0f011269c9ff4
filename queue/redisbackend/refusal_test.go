package redisbackend_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// busyScript makes srv busy: on a connection of its own, it runs a script
// that loops until SCRIPT KILL ends it, with srv's busy-reply-threshold
// lowered to 10 ms, and returns once srv answers another command with
// BUSY. end kills the script, puts the threshold back and returns once
// srv answers again; it also runs when the test ends.
func busyScript(t *testing.T, srv *redistest.Server) (end func()) {
	t.Helper()
	require.NoError(t, srv.Do("CONFIG", "SET", "busy-reply-threshold", "10").Error())
	c := newClient(t, srv)
	done := make(chan error, 1)
	go func() {
		done <- c.Do(context.Background(), c.B().Eval().Script("while true do end").Numkeys(0).Build()).Error()
	}()
	eventually(t, func() bool { return isBusy(srv.Do("GET", "busy-probe").Error()) }, "the script did not make Redis busy")
	var once sync.Once
	end = func() {
		once.Do(func() {
			err := srv.Do("SCRIPT", "KILL").Error()
			require.NoError(t, err, "the script was still running")
			select {
			case err := <-done:
				assert.ErrorContains(t, err, "killed")
			case <-time.After(waitLimit):
				require.FailNow(t, "SCRIPT KILL did not end the script")
			}
			require.NoError(t, srv.Do("CONFIG", "SET", "busy-reply-threshold", "5000").Error())
		})
	}
	t.Cleanup(end)
	return end
}

// isBusy reports whether err is Redis's BUSY reply.
func isBusy(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "BUSY ")
}

// TestBusyScriptRefusalIsUnsent: while another script runs past Redis's
// busy-reply-threshold, Redis refuses every command with BUSY before
// running it. Such errors wrap progress.ErrNotSent and
// queue.ErrUnavailable, so that a reporter sends them again and
// start-task answers 503, and the refused calls indeed did nothing: the
// lease they would have ended is still held, the task they would have
// created does not exist.
func TestBusyScriptRefusalIsUnsent(t *testing.T) {
	t.Parallel()
	inBothModes(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend) {
		ctx := context.Background()
		runTask(ctx, t, b) // loads the scripts
		held := newTask()
		require.NoError(t, b.Create(ctx, held.ID))
		require.NoError(t, b.Enqueue(ctx, held))
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		lease := leases[0]
		created := newTask()
		broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("quick")})

		end := busyScript(t, srv)
		for _, tc := range []struct {
			name string
			op   func() error
		}{
			{"Append", func() error {
				_, err := b.Append(ctx, held.ID, progress.LogEvent("refused"))
				return err
			}},
			{"AppendAndAck", func() error {
				_, _, err := b.AppendAndAck(ctx, lease, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
				return err
			}},
			{"Ack", func() error { return b.Ack(ctx, lease) }},
			{"Extend", func() error { return b.Extend(ctx, lease, time.Minute) }},
			{"CreateAndEnqueue", func() error { return b.CreateAndEnqueue(ctx, created) }},
			{"Broker.Enqueue", func() error {
				_, err := broker.Enqueue(ctx, "quick", nil, queue.EnqueueOptions{})
				return err
			}},
			{"Snapshot", func() error {
				_, _, err := b.Snapshot(ctx, held.ID)
				return err
			}},
			{"Fetch", func() error {
				_, err := b.Fetch(ctx, "w", 1, time.Minute)
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.op()
				require.Error(t, err)
				assert.ErrorContains(t, err, "BUSY")
				assert.ErrorIs(t, err, progress.ErrNotSent, "refused unrun: it may be sent again")
				assert.ErrorIs(t, err, queue.ErrUnavailable, "start-task answers 503")
			})
		}
		end()

		snap, _, err := b.Snapshot(ctx, held.ID)
		require.NoError(t, err)
		assert.Empty(t, snap.Details.StepResults, "the refused appends recorded nothing")
		assert.False(t, snap.State.Terminal(), "the refused end recorded nothing")
		_, err = b.Get(ctx, created.ID)
		assert.ErrorIs(t, err, queue.ErrNotFound, "the refused start created nothing")
		assert.NoError(t, b.Ack(ctx, lease), "the refused acknowledgements left the lease held")
	})
}

// retrySignal is a slog.Handler that closes seen at the first record
// saying that a report or an end is sent again, and drops every record.
// The reporter says so in one of two ways: the call was not sent
// (progress.ErrNotSent), or its outcome is unknown and it is sent again
// with its append key (progress.ErrMaybeSent): what a refused call
// becomes when OpTimeout ends it during a try rather than between two,
// as a stalled test process can make it.
type retrySignal struct {
	once *sync.Once
	seen chan struct{}
}

func newRetrySignal() retrySignal {
	return retrySignal{once: new(sync.Once), seen: make(chan struct{})}
}

func (h retrySignal) Enabled(context.Context, slog.Level) bool { return true }
func (h retrySignal) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h retrySignal) WithGroup(string) slog.Handler            { return h }
func (h retrySignal) Handle(_ context.Context, r slog.Record) error {
	if strings.HasSuffix(r.Message, " not sent; retrying") || strings.HasSuffix(r.Message, "; retrying with its append key") {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

// TestReportAndEndDuringBusyScriptRecordedOnce: a flow reports and ends
// while another script keeps Redis busy. Its report and its end are
// refused (BUSY), sent again by the worker's reporter once the script
// ends, and recorded once (see testReportAndEndRecordedOnce).
func TestReportAndEndDuringBusyScriptRecordedOnce(t *testing.T) {
	t.Parallel()
	testReportAndEndRecordedOnce(t, busyScript)
}

// testReportAndEndRecordedOnce runs a flow that reports, then, once
// refuse has made a fresh Redis refuse its calls unrun, reports again and
// ends. Its report and its end are refused, sent again by the worker's
// reporter once the function refuse returned lets calls in again, and
// recorded once: the task ends SUCCESS after one run, with each report
// once, and is not handed back.
func testReportAndEndRecordedOnce(t *testing.T, refuse func(*testing.T, *redistest.Server) (end func())) {
	t.Helper()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	reg := registry.New()
	started, refused := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	reg.MustRegister("refused", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		runs.Add(1)
		ft.Progress.Log("before")
		close(started)
		select {
		case <-refused:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ft.Progress.Log("during")
		return "done", nil
	}))
	retrying := newRetrySignal()
	startWorker(t, queue.NewWorker(b, b, queue.WorkerConfig{
		Registry: reg, Heartbeat: 2 * time.Second, Lease: time.Minute, Logger: slog.New(retrying),
		Backoff: func(int) time.Duration { return 10 * time.Millisecond },
	}))
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()

	id, err := broker.Enqueue(ctx, "refused", nil, queue.EnqueueOptions{MaxAttempts: 1})
	require.NoError(t, err)
	waitFor(t, started, "the flow did not start")
	eventually(t, func() bool {
		snap, _, err := b.Snapshot(ctx, id)
		return err == nil && len(snap.Details.StepResults) == 1
	}, "the first report was not recorded")

	end := refuse(t, srv)
	close(refused)
	waitFor(t, retrying.seen, "the reporter did not send a refused report again")
	end()

	var snap progress.Snapshot
	eventually(t, func() bool {
		snap, _, err = b.Snapshot(ctx, id)
		return err == nil && snap.State.Terminal()
	}, "the task did not end")
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, []string{"before", "during"}, storedSteps(t, b, id), "each report once")
	events, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Len(t, events, 4, "start, two reports, end: %v", events)
	got, err := b.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Attempt, "one run")
	assert.Zero(t, got.HandBacks, "not handed back")
	assert.Equal(t, int32(1), runs.Load())
}

// TestClusterRefusalPastOpTimeoutIsUnsent holds a task's slot half way
// through its move to another master: every script on the task's keys
// gets TRYAGAIN, which the Backend sends again until OpTimeout. The
// error it then returns wraps progress.ErrNotSent and
// queue.ErrUnavailable, so a reporter's report made meanwhile is sent
// again, and recorded once after the move.
func TestClusterRefusalPastOpTimeoutIsUnsent(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{OpTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()

	// A task alone in its slot, which is not the queue's, with its three
	// keys (record, steps, events).
	queueSlot, err := c.SlotOf(b.Prefix() + ":{q:default}:stream")
	require.NoError(t, err)
	id, slot := "", queueSlot
	for slot == queueSlot {
		id = newTask().ID
		slot, err = c.SlotOf(id)
		require.NoError(t, err)
	}
	require.NoError(t, b.Create(ctx, id))
	retrying := newRetrySignal()
	r := progress.NewTaskReporter(b, id, slog.New(retrying))
	require.NoError(t, r.Start(ctx, "Running"))
	r.Log("before")
	require.NoError(t, r.Flush(ctx))
	n, err := redisproc.Do(slotOwner(t, c, id).Addr, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot))
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "the task's keys, alone in their slot")

	to := otherMasters(t, c, slotOwner(t, c, id))[0]
	require.NoError(t, c.MoveSlot(slot, to.ID, func() {
		// One key of three has moved: the append script is refused.
		eventually(t, func() bool {
			_, err := b.Append(ctx, id, progress.LogEvent("refused"))
			require.Error(t, err, "an append ran on a half-moved slot")
			if !strings.Contains(err.Error(), "TRYAGAIN") {
				return false // OpTimeout ended a try under way: its outcome is unknown
			}
			assert.ErrorIs(t, err, progress.ErrNotSent, "refused unrun until OpTimeout: it may be sent again")
			assert.ErrorIs(t, err, queue.ErrUnavailable)
			return true
		}, "no append was refused with TRYAGAIN")
		r.Log("during")
		waitFor(t, retrying.seen, "the reporter did not send a refused report again")
	}))

	require.NoError(t, r.Flush(ctx))
	require.NoError(t, r.Succeed(ctx, "done"))
	assert.Equal(t, []string{"before", "during"}, storedSteps(t, b, id), "each report once, none of the refused appends")
	events, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Len(t, events, 4, "start, two reports, end")
}
