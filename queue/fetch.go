package queue

import (
	"context"
	"sync"

	"github.com/flowsrun/flows/internal/opctx"
	"github.com/flowsrun/flows/progress"
)

// leased is a task leased by the worker, with its progress state when
// the backend read it with the lease (see stateFetcher), else "".
type leased struct {
	lease *Lease
	state progress.State
	// extra is set on a lease the backend handed out beyond what the
	// worker asked for: it is handed back unrun (see handBackUnrun).
	extra bool
}

// fetchLoop leases tasks for the free slots and hands each to handle,
// until ctx ends. Tasks run on goroutines that take one task after the
// other, at most one per slot, started as needed and ended when fetchLoop
// returns: a goroutine whose stack has grown for one task keeps it for
// the next, where a goroutine per task would grow it again every time.
// A worker whose heartbeats have lapsed fetches nothing until one gets
// through again (see liveness.waitContact); what a fetch already waiting
// as it lapsed leases is handed back unrun (see handle, handBackUnrun),
// and so are the leases a backend hands out beyond what the worker asked
// for, each on a goroutine of its own, outside the slots: it runs no
// flow.
func (w *Worker) fetchLoop(ctx context.Context, inFlight *sync.WaitGroup, handle func(leased)) {
	slots := make(chan struct{}, w.cfg.Concurrency)
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	jobs := make(chan leased)
	defer close(jobs)
	runners := 0
	dispatch := func(l leased) {
		select {
		case jobs <- l: // an idle runner took it
			return
		default:
		}
		if runners == cap(slots) {
			// Every runner exists: one that has just released its slot
			// takes l as soon as it is back.
			jobs <- l
			return
		}
		runners++
		inFlight.Go(func() {
			for ok := true; ok; l, ok = <-jobs {
				handle(l)
				release(1)
			}
		})
	}
	backoff := minFetchBackoff
	for {
		// Wait for one free slot, then take every other free one.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	take:
		for n < cap(slots) {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break take
			}
		}

		if !w.live.waitContact(ctx) {
			return
		}
		leases, states, err := w.fetch(ctx, n)
		if len(leases) > n {
			// A backend that hands out more than asked for must not
			// break the concurrency limit: the extra go back unrun.
			w.log.Error("flows: backend leased more tasks than asked for", "asked", n, "got", len(leases))
			for _, l := range leases[n:] {
				ld := leased{lease: l, extra: true}
				inFlight.Go(func() { handle(ld) })
			}
			leases = leases[:n]
		}
		release(n - len(leases))
		for i, l := range leases {
			var state progress.State
			if i < len(states) {
				state = states[i]
			}
			dispatch(leased{lease: l, state: state})
		}
		if err == nil {
			backoff = minFetchBackoff
			continue
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Error("flows: fetching tasks failed; retrying", "err", err, "retry_in", backoff)
		if !opctx.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxFetchBackoff)
	}
}

// fetch leases up to n tasks, with their progress states when the
// backend is the store and reads them with the lease (else states is
// nil).
func (w *Worker) fetch(ctx context.Context, n int) (leases []*Lease, states []progress.State, err error) {
	if w.fetcher != nil {
		return w.fetcher.FetchWithState(ctx, w.cfg.Name, n, w.cfg.Lease)
	}
	leases, err = w.backend.Fetch(ctx, w.cfg.Name, n, w.cfg.Lease)
	return leases, nil, err
}
