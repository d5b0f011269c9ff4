package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// cutOffRegistry is a Memory whose heartbeats fail while cut is set (a
// worker that cannot reach its backend: Redis down), get no reply until
// their context ends while hang is set (a network split), and wait while
// stall holds a channel, until it is closed, whatever their
// context says (a worker whose heartbeat goroutine does not get to run:
// frozen, starved). beats counts the heartbeats that reached the Memory.
type cutOffRegistry struct {
	*queue.Memory
	cut   atomic.Bool
	hang  atomic.Bool
	stall atomic.Pointer[chan struct{}]
	beats atomic.Int64
	// leases counts the leases Fetch handed out.
	leases atomic.Int64
	// retries counts the calls of Retry; the first retryFailures of
	// them fail as a connection refused would, and reach no Memory.
	retries       atomic.Int32
	retryFailures atomic.Int32
}

func (r *cutOffRegistry) Retry(ctx context.Context, l *queue.Lease, at time.Time, why queue.AttemptEnd) error {
	if r.retries.Add(1) <= r.retryFailures.Load() {
		return errConnRefused
	}
	return r.Memory.Retry(ctx, l, at, why)
}

func (r *cutOffRegistry) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	leases, err := r.Memory.Fetch(ctx, worker, max, lease)
	r.leases.Add(int64(len(leases)))
	return leases, err
}

func (r *cutOffRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	if c := r.stall.Load(); c != nil {
		<-*c
	}
	if r.cut.Load() {
		return errors.New("cut off")
	}
	if r.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	err := r.Memory.Heartbeat(ctx, w)
	if err == nil {
		r.beats.Add(1)
	}
	return err
}

// waitBeats waits for n more heartbeats to reach the Memory.
func (r *cutOffRegistry) waitBeats(t *testing.T, n int64) {
	t.Helper()
	beats := r.beats.Load()
	require.Eventually(t, func() bool { return r.beats.Load() >= beats+n }, waitLong, 5*time.Millisecond,
		"no heartbeat reached the backend")
}

// cutOffRunning waits for the first attempt of the flow "watched" to
// start (see registerWatched) and for a heartbeat to get through, then
// cuts the worker off and waits until the flow is stopped.
func (r *cutOffRegistry) cutOffRunning(t *testing.T, started <-chan struct{}, cause *atomic.Value) {
	t.Helper()
	waitStarted(t, started)
	r.waitBeats(t, 1)
	require.Nil(t, cause.Load(), "the worker lapsed before it was cut off")
	r.cut.Store(true)
	require.Eventually(t, func() bool { return cause.Load() != nil }, waitLong, 5*time.Millisecond,
		"the worker did not lapse while cut off")
}

// TestWorkerLapseStopsFlowAndFencesItsReports: a worker whose heartbeats
// stop reaching the backend for its DeadAfter (less half an interval)
// stops its flows by its own clock, before any other worker could have
// taken their tasks back; what a stopped flow reports afterwards is
// refused, and the task is handed back. Whether that spends an attempt
// depends on why the heartbeats lapsed: a worker whose heartbeats went out
// and failed lost touch with its backend through no fault of the flow's,
// and its task (MaxAttempts 1) runs again; one whose heartbeat goroutine
// was stuck may have been stopped by its flow, and the run counts.
//
// Each case runs in a synctest bubble, on its fake clock: the heartbeats
// go out and the worker lapses at the very times its interval gives,
// however late a loaded machine runs its timers. By the machine's clock,
// a heartbeat ticker late by more than half an interval would let the
// worker lapse before it had sent the MissedBeats-1 heartbeats that tell
// a backend out of reach from a stuck worker. The test waits for events:
// a heartbeat that succeeded after the first report (the window runs
// from it), then the flow's cancellation; the flow returns
// once heartbeats get through again (a third one is sent after the second
// is confirmed).
func TestWorkerLapseStopsFlowAndFencesItsReports(t *testing.T) {
	const heartbeat = 300 * time.Millisecond
	for _, tc := range []struct {
		name      string
		cutOff    func(*cutOffRegistry) (restore func())
		wantCause string
		wantState progress.State
		wantLog   string
		status    string
	}{
		{
			name: "heartbeats fail",
			cutOff: func(b *cutOffRegistry) func() {
				b.cut.Store(true)
				return func() { b.cut.Store(false) }
			},
			wantCause: "the backend could not be reached",
			wantState: progress.StateSuccess,
			wantLog:   "attempt 2 of 2 starts: the worker of attempt 1 could not reach the backend (not counted)",
		},
		{
			// Each heartbeat waits for its reply for longer than an
			// interval, and still the next goes out within the window.
			name: "heartbeats hang",
			cutOff: func(b *cutOffRegistry) func() {
				b.hang.Store(true)
				return func() { b.hang.Store(false) }
			},
			wantCause: "the backend could not be reached",
			wantState: progress.StateSuccess,
			wantLog:   "attempt 2 of 2 starts: the worker of attempt 1 could not reach the backend (not counted)",
		},
		{
			name: "heartbeat stalled",
			cutOff: func(b *cutOffRegistry) func() {
				stall := make(chan struct{})
				b.stall.Store(&stall)
				return func() {
					b.stall.Store(nil)
					close(stall)
				}
			},
			wantState: progress.StateFailure,
			status:    "gave up after 1 attempt: worker lost",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSetup()
				b := &cutOffRegistry{Memory: s.mem}
				started, resume := make(chan struct{}), make(chan struct{})
				var cause atomic.Value
				s.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					if ft.Attempt > 1 {
						return "second", nil
					}
					ft.Progress.Log("before the lapse")
					close(started)
					// It does not look at its context on its own: the
					// timer set for the end of the window stops it, and
					// fires at that very instant on the bubble's clock.
					<-ctx.Done()
					cause.Store(context.Cause(ctx))
					<-resume
					ft.Progress.Log("after the lapse")
					return "late result", nil
				}))
				runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
					Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Logger: slog.New(slog.DiscardHandler),
				}))
				id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 1})
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
				b.waitBeats(t, 1)
				require.Nil(t, cause.Load(), "the worker lapsed before it was cut off: heartbeats stalled for %v", heartbeat*queue.MissedBeats)
				restore := tc.cutOff(b)
				require.Eventually(t, func() bool { return cause.Load() != nil }, waitLong, 5*time.Millisecond,
					"the flow's context was not cancelled while the worker was cut off")
				got := cause.Load().(error)
				assert.ErrorContains(t, got, "heartbeats lapsed")
				if tc.wantCause != "" {
					assert.ErrorContains(t, got, tc.wantCause)
				} else {
					assert.NotContains(t, got.Error(), "could not be reached")
				}
				restore()
				b.waitBeats(t, 3)
				close(resume)

				snap := waitTerminal(t, s.store, id)
				assert.Equal(t, tc.wantState, snap.State, "status %q", snap.Details.Status)
				msgs := logMessages(snap)
				assert.Contains(t, msgs, "before the lapse")
				assert.NotContains(t, msgs, "after the lapse", "a report after the lapse is refused")
				if tc.wantState == progress.StateSuccess {
					assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult), "the late result of the first attempt is not recorded")
					assert.Contains(t, msgs, tc.wantLog)
				} else {
					assert.Equal(t, tc.status, snap.Details.Status)
				}
			})
		})
	}
}

// TestLapseTakenOverCounts: a worker cut off from the backend while
// another worker goes on beating loses its task to that one, which takes
// the lease back (EndWorkerLost): the attempt counts, as for any lost
// worker, even though the cut-off worker knows its lapse was no fault of
// its flow's; its own hand-back, once it is back, finds the lease gone.
//
// It runs in a synctest bubble, as TestWorkerLapseStopsFlowAndFencesItsReports
// does, and for the same reason: by the machine's clock, a heartbeat
// ticker late by more than half an interval on a loaded machine let the
// cut-off worker lapse before it had sent its second heartbeat, and it took
// itself for a stuck worker.
func TestLapseTakenOverCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		b := &cutOffRegistry{Memory: s.mem}
		started, cause := registerWatched(s)
		cfg := queue.WorkerConfig{
			Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
		}
		runWorker(t, queue.NewWorker(b, s.store, cfg))
		id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 1})
		waitStarted(t, started)
		runWorker(t, queue.NewWorker(s.mem, s.store, cfg))
		// Back in touch before the workers stop (the cleanups run in
		// reverse): its hand-back waits for its heartbeats.
		t.Cleanup(func() { b.cut.Store(false) })
		b.waitBeats(t, 1)
		require.Nil(t, cause.Load(), "the worker lapsed before it was cut off")
		b.cut.Store(true)

		snap := waitTerminal(t, s.store, id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "gave up after 1 attempt: worker lost", snap.Details.Status)
		require.NotNil(t, cause.Load(), "the cut-off worker stopped its flow")
		assert.ErrorContains(t, cause.Load().(error), "the backend could not be reached")
	})
}

// TestHandBackAfterOutageIsTriedAgain: a worker cut off from its
// backend stops its flow and, once a heartbeat gets through again, hands
// the task back (EndBackendDown, not counted). When that hand-back fails
// too (Redis still flaky after the outage, an operation timed out under
// load), once or three times, the worker tries again after each
// heartbeat that gets through. A worker that gave up after one try left
// the task leased until its lease (an hour here) ran out, and the worker
// that took it over then would have counted the attempt (EndWorkerLost),
// which with MaxAttempts 1 fails the task.
//
// It runs in a synctest bubble, for the reason TestLapseTakenOverCounts
// gives.
func TestHandBackAfterOutageIsTriedAgain(t *testing.T) {
	for _, failures := range []int32{1, 3} {
		t.Run(fmt.Sprintf("%d failed", failures), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				handBackTriedAgain(t, failures)
			})
		})
	}
}

// handBackTriedAgain runs TestHandBackAfterOutageIsTriedAgain with the
// first failures hand-backs failing, in the caller's synctest bubble.
func handBackTriedAgain(t *testing.T, failures int32) {
	const heartbeat = 300 * time.Millisecond
	s := newSetup()
	b := &cutOffRegistry{Memory: s.mem}
	b.retryFailures.Store(failures)
	started, cause := registerWatched(s)
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
		Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(func() { b.cut.Store(false) })
	id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 1})
	b.cutOffRunning(t, started, cause)
	assert.ErrorContains(t, cause.Load().(error), "the backend could not be reached")
	b.cut.Store(false)

	require.Eventually(t, func() bool { return b.retries.Load() > failures }, waitLong, 5*time.Millisecond,
		"the hand-back that failed was not tried again: the task stays leased")
	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult))
	assert.Contains(t, logMessages(snap), "attempt 2 of 2 starts: the worker of attempt 1 could not reach the backend (not counted)")
	assert.Equal(t, failures+1, b.retries.Load(), "hand-backs tried: the ones that failed, and the next")
	task, err := s.mem.Get(context.Background(), id)
	require.NoError(t, err)
	assert.Equal(t, queue.EndBackendDown, task.PreviousEnd)
	assert.Equal(t, 2, task.Attempt, "leases")
	assert.Equal(t, 1, task.HandBacks, "the lapsed run was handed back, not counted")
}

// registerWatched registers the flow "watched" with s: its first attempt
// closes started, waits for its context to end and keeps the cause in
// cause; a later attempt returns "second".
func registerWatched(s *setup) (started chan struct{}, cause *atomic.Value) {
	started, cause = make(chan struct{}), &atomic.Value{}
	s.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		if ft.Attempt > 1 {
			return "second", nil
		}
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return nil, ctx.Err()
	}))
	return started, cause
}

func waitStarted(t *testing.T, started <-chan struct{}) {
	t.Helper()
	select {
	case <-started:
	case <-time.After(waitLong):
		require.FailNow(t, "the flow did not start")
	}
}

func logMessages(snap progress.Snapshot) []string {
	var msgs []string
	for _, s := range snap.Details.StepResults {
		msgs = append(msgs, s.Message)
	}
	return msgs
}

// TestLapsedWorkerDoesNotFetch: a worker whose heartbeats fail while its
// queue still answers has lapsed, and leases no task until a heartbeat
// gets through again; a task leased meanwhile could not run before
// then, and would be handed back unrun if none got through in time,
// spending a hand-back and a lease for nothing. Only the fetch that was
// waiting as the worker lapsed may still lease (task "in flight", taken
// before "after" is enqueued): no heartbeat gets through for the quarter
// of an interval that task waits for one, and it is handed back unrun
// (see TestLeasedWhileLapsed), and runs, as its first attempt, once the
// worker is back in contact; the task enqueued after it is leased once,
// then, and runs as its first attempt.
//
// It runs in a synctest bubble, for the reason TestLapseTakenOverCounts
// gives: by the machine's clock, a late heartbeat ticker made the watched
// task's lapsed run count, and with MaxAttempts 1 it failed.
func TestLapsedWorkerDoesNotFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		b := &cutOffRegistry{Memory: s.mem}
		started, cause := registerWatched(s)
		s.reg.MustRegister("quick", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			return "done", nil
		}))
		runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
			Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Concurrency: 3, Logger: slog.New(slog.DiscardHandler),
		}))
		// Back in touch before the worker stops (the cleanups run in
		// reverse): its hand-backs wait for its heartbeats.
		t.Cleanup(func() { b.cut.Store(false) })
		watched := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 1})
		b.cutOffRunning(t, started, cause)

		// The fetch waiting since before the lapse takes this one.
		inFlight := s.enqueue(t, "quick", queue.EnqueueOptions{})
		require.Eventually(t, func() bool { return b.leases.Load() == 2 }, waitLong, time.Millisecond,
			"the fetch in flight at the lapse did not lease")
		after := s.enqueue(t, "quick", queue.EnqueueOptions{})
		time.Sleep(heartbeat / 2)
		b.cut.Store(false)

		for _, id := range []string{watched, inFlight, after} {
			snap := waitTerminal(t, s.store, id)
			assert.Equal(t, progress.StateSuccess, snap.State, "task %s: status %q", id, snap.Details.Status)
		}
		// watched: its lapsed run and the next; in flight: its lease while
		// lapsed, which did not run, and the next; after: one.
		assert.EqualValues(t, 5, b.leases.Load(), "leases in all")
		task, err := s.mem.Get(context.Background(), after)
		require.NoError(t, err)
		assert.Equal(t, 1, task.Attempt, "leases of the task enqueued after the lapse")
		assert.Equal(t, 0, task.HandBacks)
		task, err = s.mem.Get(context.Background(), inFlight)
		require.NoError(t, err)
		assert.Equal(t, 1, task.Attempts(), "attempts of the task leased while lapsed")
		assert.Equal(t, 1, task.NoRuns, "its lease while lapsed did not run")
		assert.Equal(t, 1, task.HandBacks, "and was handed back")
	})
}

// outageRegistry is a Memory whose heartbeats fail from from to to after
// the first one that succeeded (by the clock it reads: a synctest
// bubble's), as when Redis is down for a while.
type outageRegistry struct {
	*queue.Memory
	from, to time.Duration
	first    atomic.Pointer[time.Time]
}

func (r *outageRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	now := time.Now()
	if first := r.first.Load(); first != nil && now.Sub(*first) >= r.from && now.Sub(*first) < r.to {
		return errors.New("unreachable")
	}
	err := r.Memory.Heartbeat(ctx, w)
	if err == nil {
		r.first.CompareAndSwap(nil, &now)
	}
	return err
}

// TestOutageShorterThanTheWindowKeepsTheFlow: the backend is away for
// less than the worker's liveness window, but over two of its heartbeats
// (an outage of 400 ms, from just before the heartbeat at 600 ms to just
// after the one at 900 ms, with intervals of 300 ms): the worker's
// heartbeats get through again before its window (750 ms from the one
// sent at 300 ms) ends, and its flow goes on; it is not stopped and run
// again. A worker that waited for its next tick (at 1200 ms) to try again
// lapsed at 1050 ms, with the backend back since 950 ms.
//
// It runs in a synctest bubble: the heartbeats go out at the very times
// the interval gives.
func TestOutageShorterThanTheWindowKeepsTheFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		b := &outageRegistry{Memory: s.mem, from: 2*heartbeat - 50*time.Millisecond, to: 3*heartbeat + 50*time.Millisecond}
		// Well past the outage and the end of the window it fell in.
		runKeptFlow(t, s, b, heartbeat, func() {})
	})
}

// runKeptFlow runs, on a worker of b (on s) with intervals of heartbeat,
// a flow that runs until it is told to finish; ten intervals after it
// started, it calls check, and checks that the flow was not stopped and
// that its first attempt ends the task. It runs in the caller's synctest
// bubble.
func runKeptFlow(t *testing.T, s *setup, b queue.Backend, heartbeat time.Duration, check func()) {
	t.Helper()
	started, finish := make(chan struct{}), make(chan struct{})
	var cause atomic.Value
	s.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		if ft.Attempt == 1 {
			close(started)
		}
		select {
		case <-finish:
			return ft.Attempt, nil
		case <-ctx.Done():
			cause.Store(context.Cause(ctx))
			return nil, ctx.Err()
		}
	}))
	runWorker(t, queue.NewWorker(b, s.store, queue.WorkerConfig{
		Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, Logger: slog.New(slog.DiscardHandler),
	}))
	id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 3})
	waitStarted(t, started)
	time.Sleep(10 * heartbeat)
	synctest.Wait()
	check()
	assert.Nil(t, cause.Load(), "the flow was stopped")
	close(finish)

	snap := waitTerminal(t, s.store, id)
	assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.JSONEq(t, "1", string(snap.Details.FinalResult), "the first attempt ended the task")
}

// slowReplyRegistry is a Memory that records each heartbeat at once and
// answers the ones numbered in slow (1 for the first) only after delay,
// by the clock it reads (a synctest bubble's): the backend stamped the
// heartbeat in time, and its reply is late, as on a loaded host where the
// worker's process waits for a CPU to read it. A heartbeat whose context
// ends first gets its context's error, as from a real backend; abandoned
// counts those.
type slowReplyRegistry struct {
	*queue.Memory
	slow      map[int64]bool
	delay     time.Duration
	calls     atomic.Int64
	abandoned atomic.Int64
}

func (r *slowReplyRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	n := r.calls.Add(1)
	if err := r.Memory.Heartbeat(ctx, w); err != nil {
		return err
	}
	if !r.slow[n] {
		return nil
	}
	select {
	case <-time.After(r.delay):
		return nil
	case <-ctx.Done():
		r.abandoned.Add(1)
		return ctx.Err()
	}
}

// TestLateHeartbeatRepliesKeepTheFlow: two heartbeats in a row whose
// replies come 1.1 intervals after they were sent (300 ms intervals, a
// window of 750 ms), each recorded by the backend at once. The worker
// waits for a heartbeat's reply as long as it can still renew its
// window, less a quarter of an interval for the next one: the replies
// renew it, and the flow goes on. A worker that gave up on each reply
// after one interval dropped both, and lapsed at 750 ms, 450 ms after the
// backend had recorded a heartbeat, and long before it would have taken
// the worker for dead (900 ms after that one).
//
// It runs in a synctest bubble: the heartbeats go out, and their replies
// come, at the very times the test gives.
func TestLateHeartbeatRepliesKeepTheFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		b := &slowReplyRegistry{Memory: s.mem, slow: map[int64]bool{2: true, 3: true}, delay: heartbeat * 11 / 10}
		runKeptFlow(t, s, b, heartbeat, func() {
			assert.GreaterOrEqual(t, b.calls.Load(), int64(8), "heartbeats sent")
			assert.Zero(t, b.abandoned.Load(), "late replies given up")
		})
	})
}

// lostReplyRegistry is a Memory that records the first heartbeat, whose
// reply is then lost (a connection that broke, or a reply read after its
// deadline, on a loaded host), and refuses every later one (Redis gone
// since).
type lostReplyRegistry struct {
	*queue.Memory
	calls atomic.Int64
}

func (r *lostReplyRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	if r.calls.Add(1) > 1 {
		return errConnRefused
	}
	if err := r.Memory.Heartbeat(ctx, w); err != nil {
		return err
	}
	return errors.New("reply lost")
}

// TestFirstHeartbeatLostReplyStillLapses: a worker's first heartbeat
// reaches the backend, but its reply does not reach the worker, and no
// later one gets through. The backend takes the worker for dead
// DeadAfter after that heartbeat, and another worker takes its task
// over. So the worker must lapse by then as after any heartbeat that got
// through, and stop its flow, though none of its heartbeats has
// succeeded by its own count: the two attempts must never run at once.
// Before the fix a worker counted on its leases for ever until one of
// its heartbeats succeeded, and its first attempt ran on beside the
// second (and, with Redis down, was never stopped at all).
//
// It runs in a synctest bubble: the heartbeats go out at the very times
// the interval gives.
func TestFirstHeartbeatLostReplyStillLapses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		started := make(chan struct{})
		var running atomic.Int32
		var overlapped atomic.Bool
		var cause atomic.Value
		s.reg.MustRegister("watched", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			if running.Add(1) > 1 {
				overlapped.Store(true)
			}
			defer running.Add(-1)
			if ft.Attempt > 1 {
				return ft.Attempt, nil
			}
			close(started)
			<-ctx.Done()
			cause.Store(context.Cause(ctx))
			return nil, ctx.Err()
		}))
		// A's shutdown waits its grace for a heartbeat to get through, to
		// hand its stopped run back: less than runWorker waits for it.
		cfg := queue.WorkerConfig{
			Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, ShutdownGrace: time.Second,
			Logger: slog.New(slog.DiscardHandler),
		}
		a := &lostReplyRegistry{Memory: s.mem}
		cfg.Name = "a"
		runWorker(t, queue.NewWorker(a, s.store, cfg))
		id := s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 3})
		waitStarted(t, started)
		cfg.Name = "b"
		runWorker(t, queue.NewWorker(s.mem, s.store, cfg))

		snap := waitTerminal(t, s.store, id)
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.False(t, overlapped.Load(), "two attempts of the task ran at once")
		got, _ := cause.Load().(error)
		require.Error(t, got, "the first attempt was not stopped")
		assert.ErrorContains(t, got, "could not be reached", "the worker kept sending heartbeats")
	})
}

// TestRunAgainCountsItsOwnHeartbeats: a worker whose heartbeats failed
// through a Run that then ended, and that is run again, counts in its new
// window only the heartbeats of the new Run. Its first heartbeat of that
// Run starts the window; if it is the only one it gets to send (its
// heartbeat goroutine stalled, as in a process frozen or starved), the
// worker lapses as one that did not keep sending them, and its run
// counts: the failed heartbeats of the Run before must not make it take
// the backend for unreachable, which would hand the task back uncounted
// and let a flow that stalls its process retry for ever.
//
// It runs in a synctest bubble: the heartbeats go out at the very times
// the interval gives.
func TestRunAgainCountsItsOwnHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const heartbeat = 300 * time.Millisecond
		s := newSetup()
		b := &cutOffRegistry{Memory: s.mem}
		started, cause := registerWatched(s)
		w := queue.NewWorker(b, s.store, queue.WorkerConfig{
			Registry: s.reg, Heartbeat: heartbeat, Lease: time.Hour, ShutdownGrace: time.Second,
			Logger: slog.New(slog.DiscardHandler),
		})

		// A first Run whose heartbeats all fail, ended before it lapses.
		b.cut.Store(true)
		stop := runWorker(t, w)
		time.Sleep(heartbeat * 3 / 2)
		stop()
		b.cut.Store(false)

		// A second Run, whose first heartbeat stalls.
		stall := make(chan struct{})
		b.stall.Store(&stall)
		stop = runWorker(t, w)
		s.enqueue(t, "watched", queue.EnqueueOptions{MaxAttempts: 2})
		waitStarted(t, started)
		require.Eventually(t, func() bool { return cause.Load() != nil }, waitLong, 5*time.Millisecond,
			"the worker did not lapse")
		got, _ := cause.Load().(error)
		assert.ErrorContains(t, got, "heartbeats lapsed")
		assert.NotContains(t, got.Error(), "could not be reached",
			"the heartbeats of the Run before were counted in the new window")
		b.stall.Store(nil)
		close(stall)
		stop()
	})
}
