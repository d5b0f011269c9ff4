package queue

import (
	"context"
	"time"
)

// The caller limits of a Memory backend (see CallerLimits): per caller,
// the theoretical arrival time of its next start, and its waiting tasks.

// memCaller is what a Memory knows of one caller.
type memCaller struct {
	// tat is the theoretical arrival time of the caller's next start
	// (the generic cell rate algorithm): a start at now passes while
	// tat+interval-now is within the window.
	tat time.Time
	// pending maps the caller's tasks counted as waiting to when they
	// were admitted.
	pending map[string]time.Time
}

// callerSweepEvery is how many admissions pass between two sweeps of the
// callers a Memory no longer needs to remember.
const callerSweepEvery = 1024

// AdmitCaller counts one start of caller against lim, for the task id, as
// the Redis backend does: a *CallerLimitError when over a limit, and then
// nothing is counted. See CallerLimits.
func (m *Memory) AdmitCaller(ctx context.Context, caller string, lim CallerLimits, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lim = lim.withDefaults()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	m.expire(now)
	if m.callers == nil {
		m.callers = map[string]*memCaller{}
	}
	if m.admitted++; m.admitted%callerSweepEvery == 0 {
		m.sweepCallers(now)
	}
	c := m.callers[caller]
	if c == nil {
		c = &memCaller{pending: map[string]time.Time{}}
		m.callers[caller] = c
	}
	_, again := c.pending[id]
	if lim.MaxPending > 0 && !again && len(c.pending) >= lim.MaxPending {
		m.prunePending(c, now)
		if len(c.pending) >= lim.MaxPending {
			return &CallerLimitError{Limit: LimitPending}
		}
	}
	if lim.Starts > 0 {
		interval := lim.Per / time.Duration(lim.Starts)
		next := c.tat
		if next.Before(now) {
			next = now
		}
		next = next.Add(interval)
		if wait := next.Sub(now) - lim.Per; wait > 0 {
			return &CallerLimitError{Limit: LimitStarts, RetryAfter: wait}
		}
		c.tat = next
	}
	if lim.MaxPending > 0 {
		c.pending[id] = now
	}
	return nil
}

// prunePending forgets the tasks of c that no longer wait: leased,
// cancelled, ended or gone, and those admitted a while ago but never
// stored. m.mu is held.
func (m *Memory) prunePending(c *memCaller, now time.Time) {
	for id, at := range c.pending {
		mt, ok := m.tasks[id]
		if (ok && !waitsFirstRun(mt)) || (!ok && now.Sub(at) > callerAdmitGrace) {
			delete(c.pending, id)
		}
	}
}

// waitsFirstRun reports whether mt is waiting for its first run: ready,
// delayed, or in its flow's gate, never leased, not cancelled.
func waitsFirstRun(mt *memTask) bool {
	return (mt.state == memReady || mt.state == memDelayed || mt.state == memWaiting) && mt.task.Attempt == 0 && !mt.task.Cancelled
}

// sweepCallers forgets the callers whose rate is back to full and who have
// no task waiting. m.mu is held.
func (m *Memory) sweepCallers(now time.Time) {
	for name, c := range m.callers {
		m.prunePending(c, now)
		if len(c.pending) == 0 && !c.tat.After(now) {
			delete(m.callers, name)
		}
	}
}
