package queue

import (
	"context"
	"time"

	"github.com/flowsrun/flows/internal/opctx"
)

// activeRun is a running task's run; next is another run of the same
// task (a lease lost and the task leased again by this worker).
type activeRun struct {
	cancel context.CancelCauseFunc
	next   *activeRun
}

// subscribe opens the backend's cancellation feed, retrying while the
// backend fails, until ctx (Run's) ends; then it returns nil.
func (w *Worker) subscribe(ctx, listenCtx context.Context) <-chan string {
	backoff := minFetchBackoff
	for {
		ch, err := w.backend.Cancellations(listenCtx)
		if err == nil {
			return ch
		}
		w.log.Error("flows: listening for cancellations failed; retrying", "err", err, "retry_in", backoff)
		if !opctx.Sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, maxFetchBackoff)
	}
}

// listen cancels the running tasks named on the cancellation feed until
// ctx ends, subscribing again if the feed closes early.
func (w *Worker) listen(ctx context.Context, cancels <-chan string) {
	for {
		for id := range cancels {
			w.cancelActive(id)
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("flows: cancellation feed closed; listening again")
		if !opctx.Sleep(ctx, minFetchBackoff) {
			return
		}
		if cancels = w.subscribe(ctx, ctx); cancels == nil {
			return
		}
	}
}

// recentCancelWindow is how long a worker remembers the cancellation of
// a task it was not running: a run of that task that starts meanwhile
// (fetched before the cancellation, tracked after it) is cancelled at
// once.
const recentCancelWindow = time.Minute

// maxRecentCancels is the size past which forgetting old cancellations
// starts.
const maxRecentCancels = 1024

func (w *Worker) cancelActive(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active[id] == nil {
		now := time.Now()
		if len(w.recent) >= maxRecentCancels {
			for k, at := range w.recent {
				if now.Sub(at) > recentCancelWindow {
					delete(w.recent, k)
				}
			}
		}
		w.recent[id] = now
		return
	}
	for r := w.active[id]; r != nil; r = r.next {
		r.cancel(errTaskCancelled)
	}
}

// stopFlows cancels every run with cause (not nil), those tracked from
// now on too, until the next Run, and closes the stop signal (see
// stopSignal).
func (w *Worker) stopFlows(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flowsStopped != nil {
		return
	}
	close(w.stopped)
	w.flowsStopped = cause
	for _, r := range w.active {
		for ; r != nil; r = r.next {
			r.cancel(cause)
		}
	}
}

// stopSignal returns a channel closed once the worker's shutdown has
// stopped its flows (see stopFlows).
func (w *Worker) stopSignal() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// track records the cancel func of a running task until untrack is
// called with the run it returns. A task cancelled recently (see
// cancelActive), or a run tracked after stopFlows, is cancelled at once.
func (w *Worker) track(id string, cancel context.CancelCauseFunc) *activeRun {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := &activeRun{cancel: cancel, next: w.active[id]}
	w.active[id] = r
	if w.flowsStopped != nil {
		cancel(w.flowsStopped)
	}
	if at, ok := w.recent[id]; ok {
		delete(w.recent, id)
		if time.Since(at) <= recentCancelWindow {
			cancel(errTaskCancelled)
		}
	}
	return r
}

// untrack forgets the run r of task id.
func (w *Worker) untrack(id string, r *activeRun) {
	w.mu.Lock()
	defer w.mu.Unlock()
	head := w.active[id]
	if head == r {
		if r.next == nil {
			delete(w.active, id)
		} else {
			w.active[id] = r.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == r {
			p.next = r.next
			return
		}
	}
}
