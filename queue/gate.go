package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Admitter is implemented by a Backend whose flow limits (see Limit) move
// only when asked: the Redis backend, whose waiting tasks take the slots
// that free up when a worker calls Admit. The Memory backend admits
// waiting tasks itself, as slots free up, and is not one. A Backend that
// wraps one that is must implement it by calling the wrapped backend's
// Admit: a worker given a backend that hides it calls Admit never, and
// the tasks of limited flows that found no free slot when they were
// queued wait until another task of their flow is queued.
type Admitter interface {
	// Admit gives the free slots of the flows named in limits to their
	// waiting tasks, as far as their rates allow, and returns how long
	// nothing can change but by a slot freeing up or a task let through
	// being leased (a rate's window moving on, a waiting task falling
	// due), at most a second. A flow named with a Limit that is not On
	// has no limits now, whatever its tasks were queued with: Admit lets
	// every task that waits for its limits through (in batches: a next
	// of zero says that more wait), taking no slot or start, and forgets
	// its slots whose tasks have ended, so that a deploy that removes a
	// flow's limits leaves no task waiting for them.
	Admit(ctx context.Context, limits map[string]Limit) (next time.Duration, err error)
}

// Bounds of the gatekeeper's waits between two Admit calls.
const (
	minAdmitWait = time.Millisecond
	maxAdmitWait = time.Second
)

// drainEvery is how often the gatekeeper names the flows of the worker's
// registry that have no limits in its Admit call, so that the tasks that
// still wait behind limits those flows had before are let through (see
// Admitter): once as the worker starts, then at this pace, which bounds
// the wait of a task queued by a Broker that still has the limits while
// no worker with them runs.
const drainEvery = 10 * time.Second

// gatekeeper runs Admit for the limited flows of a worker's registry:
// at once when one of the worker's tasks of a limited flow has been
// settled (its slot may be free), or leased if its flow has a rate (the
// backend counted its start as it leased it, which tells when the rate's
// window moves on), when the backend says the next change is due, and at
// least once a second, which is what frees the slots of a dead worker's
// tasks once they end elsewhere. Its calls never overlap: a worker costs
// at most one Admit per settled task, per leased task of a flow with a
// rate and per change, and one a second while it holds none. The flows
// of the registry without limits join a call as the worker starts and
// every drainEvery after (see drainEvery), and the next call while the
// one before says more wait: a worker with no limited flow costs one
// Admit per drainEvery, none per task.
type gatekeeper struct {
	kick chan struct{} // one buffered: a settled task's call for an Admit
}

func newGatekeeper() *gatekeeper { return &gatekeeper{kick: make(chan struct{}, 1)} }

// limitReleased asks the gatekeeper for an Admit soon: a task of a
// limited flow has been settled here.
func (w *Worker) limitReleased() {
	if w.gate == nil {
		return
	}
	select {
	case w.gate.kick <- struct{}{}:
	default:
	}
}

// rateStarted asks the gatekeeper for an Admit soon: a task of a flow
// with a rate has been leased here, and the backend counted its start.
// Until then, the Admit calls knew of no time at which the rate's window
// would move on (see Admitter).
func (w *Worker) rateStarted() { w.limitReleased() }

// keepGates runs the gatekeeper until the returned stop is called; it
// does nothing for a backend that is not an Admitter.
func (w *Worker) keepGates(base context.Context) (stop func()) {
	a, ok := w.backend.(Admitter)
	if !ok || w.gate == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(base)
	var done sync.WaitGroup
	done.Go(func() {
		wait := time.NewTimer(0)
		defer wait.Stop()
		var drainAt time.Time // when the flows without limits next join a call
		for {
			select {
			case <-ctx.Done():
				return
			case <-wait.C:
			case <-w.gate.kick:
				wait.Stop()
			}
			next := maxAdmitWait
			limits := w.limits()
			now := time.Now()
			drain := !now.Before(drainAt)
			if drain {
				limits = w.unlimited(limits)
			}
			if len(limits) > 0 {
				opCtx, opCancel := context.WithTimeout(ctx, opTimeout)
				d, err := a.Admit(opCtx, limits)
				opCancel()
				switch {
				case err == nil:
					next = min(max(d, minAdmitWait), maxAdmitWait)
					if drain && d > 0 { // else more may wait: drain again
						drainAt = now.Add(drainEvery)
					}
				case ctx.Err() == nil:
					w.log.Warn("flows: letting the waiting tasks of limited flows start failed", "err", err)
				}
			} else if drain {
				drainAt = now.Add(drainEvery)
			}
			wait.Reset(next)
		}
	})
	return func() {
		cancel()
		done.Wait()
	}
}

// limits returns the Limits of the limited flows of the worker's registry.
func (w *Worker) limits() map[string]Limit {
	policies := w.cfg.Registry.Limited()
	if len(policies) == 0 {
		return nil
	}
	out := make(map[string]Limit, len(policies))
	for name, p := range policies {
		out[name] = LimitOf(p)
	}
	return out
}

// unlimited adds to limits (made if nil) the flows of the worker's
// registry that have no limits, each with the zero Limit: Admit lets
// their tasks that wait behind limits they had before through.
func (w *Worker) unlimited(limits map[string]Limit) map[string]Limit {
	names := w.cfg.Registry.Unlimited()
	if len(names) == 0 {
		return limits
	}
	if limits == nil {
		limits = make(map[string]Limit, len(names))
	}
	for _, name := range names {
		limits[name] = Limit{}
	}
	return limits
}

// warnHidden logs a warning, from NewWorker, when backend keeps no worker
// registry. Both of this module's backends keep one, so the likely
// cause is a wrapper (one that counts or logs calls, say) that passes on
// the Backend methods only: the optional interfaces of the backend it
// wraps are hidden from the worker, which then silently does without
// them. The warning names what is lost and how to keep it.
func warnHidden(backend Backend, log *slog.Logger) {
	if _, ok := backend.(WorkerRegistry); ok {
		return
	}
	log.Warn("flows: the backend keeps no worker registry (it is not a queue.WorkerRegistry), "+
		"so this worker sends no heartbeat, is not listed among the live workers, and when it dies its tasks "+
		"come back only as their leases pass, not within seconds. A wrapper of a backend must pass its "+
		"optional interfaces through: WorkerRegistry and Retirer, and Admitter, without which the tasks of "+
		"limited flows on Redis wait for a slot until another task of their flow is queued",
		"backend", fmt.Sprintf("%T", backend))
}
