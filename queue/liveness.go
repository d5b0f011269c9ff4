package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// errWorkerLapsed is the cause of a run stopped because its worker's
// heartbeats lapsed (see liveness).
var errWorkerLapsed = errors.New("queue: the worker's heartbeats lapsed; its tasks may run elsewhere")

// errBackendUnreachable is errWorkerLapsed when the worker kept sending
// its heartbeats and none got through (see liveness.cause): the lapse is
// the backend's fault, not the flow's.
var errBackendUnreachable = fmt.Errorf("%w (the backend could not be reached)", errWorkerLapsed)

// liveness is a worker's own view of its standing in the backend's
// registry (see WorkerRegistry): until when it is sure that no other
// worker can have taken its leases back. That is the time it sent its
// last heartbeat that succeeded, plus its DeadAfter less half a heartbeat
// interval: the backend stamps the heartbeat no earlier than it was sent,
// and takes the leases back no earlier than DeadAfter after that stamp,
// on its own clock. Until one has succeeded, it is the time it sent its
// first heartbeat, plus as much: a heartbeat that failed may have been
// recorded all the same (its reply lost, or read after its deadline),
// and the worker judged dead from its stamp on.
//
// Past that time the worker has lapsed: it stops its runs at once
// (errWorkerLapsed), its flows' contexts report themselves done, and
// their stores refuse what they report, even before the timer that
// cancels them has run. That matters for a process that was frozen (a
// SIGSTOP, a VM paused): when it resumes, a flow's next look at its
// context comes before any call it would make, and finds it done,
// whichever of its goroutines runs first. A worker that has not yet
// sent a heartbeat, or whose backend keeps no registry, never lapses:
// no one can take its leases back before they pass.
//
// Why it lapsed decides what its stopped runs cost (see cause): a worker
// that kept sending heartbeats which failed (Redis down, a network split)
// lost touch through no fault of its flows, and hands their tasks back
// without spending an attempt; one that did not get to send them (frozen,
// starved, a flow hogging the process) may have been stopped by its flow,
// and its runs count, so that a poison task stays bounded.
type liveness struct {
	w *Worker
	// epoch is the origin of until, read with its monotonic clock.
	epoch time.Time
	// window is how long after a heartbeat is sent the worker may count
	// on its leases.
	window time.Duration
	// until is the end of that time, in ns since epoch; math.MaxInt64
	// while no heartbeat has been sent.
	until atomic.Int64
	// tries counts the heartbeats sent since the last one that
	// succeeded was sent (until one has, since the Run's first), and
	// before until.
	tries atomic.Int32
	// lapses counts the lapses that a heartbeat has ended (see confirm):
	// with lapsed, it tells whether the worker has lapsed at any time
	// since it was read (see lapsedSince).
	lapses atomic.Uint64

	mu    sync.Mutex
	timer *time.Timer // stops the runs at until
	// renewed is closed, and replaced, by each heartbeat that succeeds:
	// the fetch loop of a lapsed worker waits on it (see waitContact).
	renewed chan struct{}
}

func newLiveness(w *Worker) *liveness {
	l := &liveness{
		w:       w,
		epoch:   time.Now(),
		window:  WorkerInfo{Heartbeat: w.cfg.Heartbeat}.DeadAfter() - w.cfg.Heartbeat/2,
		renewed: make(chan struct{}),
	}
	l.until.Store(math.MaxInt64)
	return l
}

// lapsed reports whether the worker's leases may have been taken back:
// from until on, the very instant included, so that the timer set for
// until finds the worker lapsed even on a clock that fires it exactly
// then (a synctest bubble's). It reads the monotonic clock only.
func (l *liveness) lapsed() bool {
	return l != nil && int64(time.Since(l.epoch)) >= l.until.Load()
}

// lapseCount returns the number of the worker's lapses that a heartbeat
// has ended, for lapsedSince; 0 for a nil l.
func (l *liveness) lapseCount() uint64 {
	if l == nil {
		return 0
	}
	return l.lapses.Load()
}

// lapsedSince reports whether the worker has lapsed at any time since
// lapseCount returned n: it has lapsed, or a heartbeat has ended a lapse
// since then. Another worker may have taken back, meanwhile, a lease the
// worker held then, or took since (see job.waitLapse). A nil l never
// lapses.
func (l *liveness) lapsedSince(n uint64) bool {
	return l != nil && (l.lapsed() || l.lapses.Load() != n)
}

// trying records a heartbeat about to be sent at sent; the heartbeats
// sent after the worker lapsed do not count (see cause). The first one
// sets until, as if it had succeeded (see liveness), and the count starts
// again from it: the heartbeats that failed in a Run before stop do not
// tell that this one keeps sending them. The heartbeats are sent one at
// a time, and confirmed on the goroutine that sends them.
func (l *liveness) trying(sent time.Time) {
	at := int64(sent.Sub(l.epoch))
	if l.until.Load() == math.MaxInt64 {
		l.mu.Lock()
		if l.until.Load() == math.MaxInt64 {
			l.tries.Store(0)
			l.renew(at)
		}
		l.mu.Unlock()
	}
	if at < l.until.Load() {
		l.tries.Add(1)
	}
}

// replyBy returns until when the worker waits for the reply of a
// heartbeat sent at sent, with intervals of interval: an interval, or
// longer while the reply can still renew the window, up to a quarter of
// an interval before the window ends, so that the next heartbeat still
// goes out in it (see cause); never longer than limit. A heartbeat the
// backend recorded in time but whose reply comes late (a loaded host,
// where the worker's process waits for a CPU to read it) then still
// renews the window, where giving up on it after an interval left the
// next one a fraction of an interval to get through.
func (l *liveness) replyBy(sent time.Time, interval, limit time.Duration) time.Time {
	wait := interval
	if until := l.until.Load(); until != math.MaxInt64 {
		wait = max(wait, time.Duration(until)-interval/4-sent.Sub(l.epoch))
	}
	return sent.Add(min(wait, limit))
}

// cause says why the worker lapsed, as the cause of the runs it stops.
// A worker that keeps pace sends MissedBeats-1 heartbeats in its window
// after the last one that succeeded: if it sent that many and none got
// through in time, the backend could not be reached
// (errBackendUnreachable). A frozen process sends at most one before it
// stops (the heartbeats go one at a time, and those sent after the lapse
// do not count), and a starved one falls behind: then errWorkerLapsed,
// whose runs count as attempts.
func (l *liveness) cause() error {
	if l.tries.Load() >= MissedBeats-1 {
		return errBackendUnreachable
	}
	return errWorkerLapsed
}

// confirm records a heartbeat sent at sent that succeeded. If the worker
// had lapsed before it was sent, its runs are stopped first: the ones
// started before are no longer its own.
func (l *liveness) confirm(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := int64(sent.Sub(l.epoch))
	if at >= l.until.Load() {
		l.w.stopRuns(l.cause())
	}
	// A heartbeat confirmed while the worker has lapsed ends the lapse:
	// it is counted before until moves, so that a look meanwhile finds
	// the worker lapsed, or the lapse counted (see lapsedSince).
	if int64(time.Since(l.epoch)) >= l.until.Load() {
		l.lapses.Add(1)
	}
	// until first: a run that looks meanwhile finds the worker lapsed
	// with the tries of the lapse, or not lapsed.
	l.renew(at)
	l.tries.Store(0)
	close(l.renewed)
	l.renewed = make(chan struct{})
}

// renew sets until to a window after at, a heartbeat's send time in ns
// since epoch, and the timer that stops the runs then. l.mu is held.
func (l *liveness) renew(at int64) {
	until := at + int64(l.window)
	if until < at { // a window of a century and more, decades after epoch
		until = math.MaxInt64
	}
	l.until.Store(until)
	wait := time.Duration(until) - time.Since(l.epoch)
	if l.timer == nil {
		l.timer = time.AfterFunc(wait, l.expire)
		return
	}
	l.timer.Reset(wait)
}

// expire stops the runs if the worker has lapsed; a heartbeat may have
// moved until since the timer was set.
func (l *liveness) expire() {
	if !l.lapsed() {
		return
	}
	cause := l.cause()
	if errors.Is(cause, errBackendUnreachable) {
		l.w.log.Warn("flows: the backend could not be reached in time; stopping the flows, to hand their tasks back once it answers",
			"window", l.window)
	} else {
		l.w.log.Warn("flows: no heartbeat reached the backend in time; stopping the flows, whose tasks may be taken back",
			"window", l.window)
	}
	l.w.stopRuns(cause)
}

// waitContact is awaitContact for the fetch loop, which calls it before
// each fetch, with logs: a lapsed worker would hand back unrun the tasks
// it leased (see handBackUnrun), spending a lease and a hand-back of
// each for nothing. A fetch already waiting in the backend as the worker
// lapses may still lease: handle waits for a heartbeat before it runs
// those, or hands them back (see job.waitLapse).
func (l *liveness) waitContact(ctx context.Context) bool {
	if !l.lapsed() {
		return true
	}
	l.w.log.Warn("flows: the worker's heartbeats have lapsed; fetching no task until one gets through")
	if !l.awaitContact(ctx, nil) {
		return false
	}
	l.w.log.Info("flows: a heartbeat got through; fetching again")
	return true
}

// awaitContact returns true at once while the worker has not lapsed (nil
// l included), else when a heartbeat has got through again; false if ctx
// ended, or stop was closed, first. It waits for the heartbeat that
// renews the liveness (see confirm), not for the clock.
func (l *liveness) awaitContact(ctx context.Context, stop <-chan struct{}) bool {
	return l.await(ctx, stop, false)
}

// awaitContactInTime is awaitContact for a task the worker leased while
// it had lapsed (see job.waitLapse), which it would rather run than hand
// back: it also returns false once the worker has been lapsed for a
// quarter of an interval, the time left to hand the task back before
// another worker may take its lease back as EndWorkerLost, which would
// count an attempt that never ran. The backend finds the worker dead no
// earlier than DeadAfter after it sent its last heartbeat that got
// through, half an interval past until (see liveness); the other quarter
// is for the hand-back to reach it, as a heartbeat's last quarter is for
// the next one (see replyBy). It returns false once ctx ends too.
func (l *liveness) awaitContactInTime(ctx context.Context, stop <-chan struct{}) bool {
	return l.await(ctx, stop, true)
}

// await is awaitContact, and awaitContactInTime when inTime is set.
func (l *liveness) await(ctx context.Context, stop <-chan struct{}, inTime bool) bool {
	for {
		if !l.lapsed() {
			return true
		}
		renewed := l.renewal()
		until := l.until.Load()
		// A heartbeat confirmed before renewed was read has moved
		// until; one confirmed after closes renewed.
		if !l.lapsed() {
			return true
		}
		var late <-chan time.Time
		if inTime {
			// Lapsed: until has passed, and this does not overflow.
			left := time.Duration(until) + l.w.cfg.Heartbeat/4 - time.Since(l.epoch)
			if left <= 0 {
				return false
			}
			late = time.After(left)
		}
		select {
		case <-renewed:
		case <-late: // a heartbeat confirmed meanwhile may have moved until
		case <-ctx.Done():
			return false
		case <-stop:
			return false
		}
	}
}

// renewal returns a channel that the next heartbeat to succeed closes
// (see confirm), whenever it was sent; nil for a nil l (a worker that
// sends no heartbeats).
func (l *liveness) renewal() <-chan struct{} {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// stop ends the timer; the worker no longer lapses.
func (l *liveness) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.until.Store(math.MaxInt64)
}

// stopRuns cancels every run in progress with cause; unlike stopFlows,
// runs started later are not cancelled.
func (w *Worker) stopRuns(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.active {
		for ; r != nil; r = r.next {
			r.cancel(cause)
		}
	}
}

// liveCtx is the context a flow runs with when its worker keeps a
// liveness: Done and Err first look at the clock, and stop the run if the
// worker has lapsed, so that a flow that resumes after a freeze finds its
// context done before it does anything else. Contexts derived from it are
// cancelled with it.
type liveCtx struct {
	context.Context
	live   *liveness
	cancel context.CancelCauseFunc
}

func (c *liveCtx) check() {
	if c.live.lapsed() {
		c.cancel(c.live.cause())
	}
}

// Done implements context.Context.
func (c *liveCtx) Done() <-chan struct{} {
	c.check()
	return c.Context.Done()
}

// Err implements context.Context.
func (c *liveCtx) Err() error {
	c.check()
	return c.Context.Err()
}

// flowContext returns the context j's flow runs with: ctx, which cancel
// cancels, watched by the worker's liveness if it keeps one.
func (j *job) flowContext(ctx context.Context, cancel context.CancelCauseFunc) context.Context {
	if j.w.live == nil {
		return ctx
	}
	return &liveCtx{Context: ctx, live: j.w.live, cancel: cancel}
}
