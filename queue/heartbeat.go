package queue

import (
	"context"
	"errors"
	"sync"
	"time"
)

// heartbeat extends a run's lease every Lease/3 until stop is called; when
// the lease turns out to be lost, or the task cancelled, it cancels the
// run. It is a timer, not a
// goroutine: most flows end before the first beat, and cost nothing more.
type heartbeat struct {
	j        *job
	cancel   context.CancelCauseFunc
	interval time.Duration
	timer    *time.Timer

	mu      sync.Mutex
	stopped bool
	beating sync.WaitGroup // a beat in progress
}

func (j *job) startHeartbeat(cancel context.CancelCauseFunc) *heartbeat {
	h := &heartbeat{j: j, cancel: cancel, interval: max(j.w.cfg.Lease/3, time.Millisecond)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timer = time.AfterFunc(h.interval, h.beat)
	return h
}

// beat extends the lease once and sets the timer for the next beat.
func (h *heartbeat) beat() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.beating.Add(1)
	h.mu.Unlock()
	defer h.beating.Done()

	j := h.j
	ctx := j.op()
	err := j.w.backend.Extend(ctx, j.lease, j.w.cfg.Lease)
	switch {
	case err == nil:
	case errors.Is(err, ErrLeaseLost):
		j.logger().Warn("flows: lease lost; stopping the flow", "err", err)
		h.cancel(errLeaseStolen)
		return
	case errors.Is(err, ErrCancelled):
		// The cancellation feed may have missed it; the lease is
		// extended all the same and kept until the run is settled.
		j.logger().Info("flows: task cancelled; stopping the flow")
		h.cancel(errTaskCancelled)
	default:
		j.logger().Warn("flows: extending the lease failed", "err", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.timer.Reset(h.interval)
	}
}

// stop ends the beats and waits for one in progress, so that no Extend
// follows the run's outcome.
func (h *heartbeat) stop() {
	h.mu.Lock()
	h.stopped = true
	h.timer.Stop()
	h.mu.Unlock()
	h.beating.Wait()
}
