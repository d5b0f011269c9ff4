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
	// lapses is the worker's count of lapses as the Fetch was sent (see
	// liveness.lapseCount): a task leased by a Fetch that a lapse
	// overlapped runs only once Extend finds its lease held (see
	// job.waitLapse).
	lapses uint64
}

// fetchLoop leases tasks for the free slots and hands each to handle,
// until ctx ends. Tasks run on goroutines that take one task after the
// other, at most one per slot, started as needed and ended when fetchLoop
// returns: a goroutine whose stack has grown for one task keeps it for
// the next, where a goroutine per task would grow it again every time.
// A task goes to the goroutine whose last task ended last (see runners).
// A worker whose heartbeats have lapsed fetches nothing until one gets
// through again (see liveness.waitContact); what a fetch already waiting
// as it lapsed leases runs only once one does, in time, and if its lease
// survived the lapse, else it is handed back unrun (see handle,
// job.waitLapse). The leases a backend hands out beyond what the worker
// asked for are handed back unrun (see handBackUnrun), each on a
// goroutine of its own, outside the slots: it runs no flow.
func (w *Worker) fetchLoop(ctx context.Context, inFlight *sync.WaitGroup, handle func(leased)) {
	slots := make(chan struct{}, w.cfg.Concurrency)
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	rs := &runners{handle: handle, release: release}
	defer rs.close()
	dispatch := func(l leased) {
		if !rs.give(l) {
			// No runner is idle: fewer exist than slots, since each one
			// goes idle before it gives its slot back (see runners).
			inFlight.Go(func() { rs.run(l) })
		}
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
		lapses := w.live.lapseCount()
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
			dispatch(leased{lease: l, state: state, lapses: lapses})
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

// runners are the goroutines that run a worker's tasks, one after the
// other (see fetchLoop). A task goes to the runner back last, as a flow
// goes to the goroutine of the worker's pool back last (see pool): when
// fewer tasks run at once than there are slots, the few runners they
// need keep their stacks grown, and the others stay idle, where taking
// runners in turn would have each of them shrunk by the GC while it
// waited and grown again for its next task (a task's own work, up to the
// Append of its end, runs on its runner).
//
// A runner goes idle before it gives its slot back: a task leased for a
// slot finds a runner idle, unless fewer runners exist than slots.
type runners struct {
	handle  func(leased)
	release func(n int) // gives slots back

	mu     sync.Mutex
	idle   []chan leased // the runner back last last; each buffered
	closed bool
}

// give hands l to the idle runner back last, and reports whether one was
// idle.
func (rs *runners) give(l leased) bool {
	rs.mu.Lock()
	n := len(rs.idle)
	if n == 0 {
		rs.mu.Unlock()
		return false
	}
	next := rs.idle[n-1]
	rs.idle[n-1] = nil
	rs.idle = rs.idle[:n-1]
	rs.mu.Unlock()
	next <- l
	return true
}

// run is a runner: it runs l, then the tasks given to it, until close.
func (rs *runners) run(l leased) {
	next := make(chan leased, 1)
	for {
		rs.handle(l)
		rs.mu.Lock()
		closed := rs.closed
		if !closed {
			rs.idle = append(rs.idle, next)
		}
		rs.mu.Unlock()
		rs.release(1)
		if closed {
			return
		}
		var ok bool
		if l, ok = <-next; !ok {
			return
		}
	}
}

// close ends the idle runners, and the others as their tasks end.
func (rs *runners) close() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.closed = true
	for _, next := range rs.idle {
		close(next)
	}
	rs.idle = nil
}
