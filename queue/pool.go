package queue

import (
	"context"
	"sync"
	"time"
)

// pool keeps the goroutines that do the work of the worker's tasks:
// the runs of their flows and the calls of their finish hooks (see call),
// so that the stack one has grown for a task is there for the next. A
// goroutine started for each flow grows its stack from 2 KB again every
// time, copying it at each doubling: about 13,700 instructions of a task
// that does nothing but report progress with the GC off (a tenth), 8,300
// with the default GOGC (see BENCHMARKS.md, "flows on goroutines the
// worker keeps"). A task's hooks run after its flow has returned, on the
// goroutine that came back last: most often the one its flow ran on.
//
// A call takes the goroutine that came back last, whose stack is the
// likeliest to be in the CPU's caches, and starts one when none is idle:
// there are as many as calls have run at once, at most the worker's
// Concurrency (a task runs its flow, then its hooks, one call at a
// time), fewer when tasks are short. The price is memory: an idle
// goroutine keeps the stack its calls grew, as much as the deepest of
// them took, until collections halve it (the GC halves the stack of a
// goroutine that uses under a quarter of it).
//
// A panic is recovered in the call (see job.callFlow, job.callHook), and
// its goroutine goes back to the pool. A call that ends its goroutine
// (runtime.Goexit) takes it along, and so does a call the worker stops
// waiting for (a flow abandoned, see WorkerConfig.AbandonAfter; hooks
// past FinishHookTimeout and its grace), whose goroutine ends when the
// call returns (see drop): the pool starts another for the next call,
// and is never short of one. Run closes the pool as it ends, ending the
// idle goroutines (see close).
//
// A flow or a hook should leave its goroutine as it found it, as a
// net/http handler leaves its connection's: a thread it locked
// (runtime.LockOSThread) unlocked, and goroutine labels set with
// pprof.Do rather than pprof.SetGoroutineLabels.
type pool struct {
	max int // idle goroutines kept, at most

	mu     sync.Mutex
	idle   []*pooled // the last one back last
	closed bool
}

func newPool(max int) *pool { return &pool{max: max} }

// call is work for a goroutine of a pool: a flow's run (flowCall) or a
// task's finish hooks (hookCall). Its caller owns it, and reads what run
// wrote once wait has said that it returned; a call the caller stops
// waiting for is left to its goroutine: the caller reads of it only what
// is safe to read meanwhile (hookCall.again), and never starts it again.
type call interface {
	// run does the work, on the pool's goroutine. It may end the
	// goroutine (runtime.Goexit), also while a panic is recovered in it
	// (a recover does not cancel a Goexit).
	run()
	// exited is called on the goroutine as it ends because run ended
	// it, before done says so.
	exited()
}

// pooled is a goroutine of a pool, and how to talk to it.
type pooled struct {
	// calls takes the calls to run to the goroutine. Closing it ends the
	// goroutine once its call returns.
	calls chan call
	// done receives, as each call returns or ends the goroutine, whether
	// it ended it: buffered, so that a goroutine whose call the worker
	// stopped waiting for never waits for the worker.
	done chan bool
	// exited is closed as the goroutine ends.
	exited chan struct{}
}

// start runs c on an idle goroutine of the pool, or on a new one if none
// is idle, and returns that goroutine, which the caller gives to wait.
func (p *pool) start(c call) *pooled {
	p.mu.Lock()
	var g *pooled
	if n := len(p.idle); n > 0 {
		g = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if g == nil {
		g = &pooled{calls: make(chan call), done: make(chan bool, 1), exited: make(chan struct{})}
		go g.loop()
	}
	g.calls <- c
	return g
}

// wait waits for the call g runs to return, giving it grace more once
// ctx ends, and gives g back: to the pool when the call returned, to the
// call when it ended the goroutine or did not return in time (drop). It
// reports whether the call returned (or ended the goroutine).
func (p *pool) wait(g *pooled, ctx context.Context, grace time.Duration) (returned bool) {
	var exited bool
	select {
	case exited = <-g.done:
	case <-ctx.Done():
		t := time.NewTimer(grace)
		select {
		case exited = <-g.done:
			t.Stop()
		case <-t.C:
			p.drop(g)
			return false
		}
	}
	if exited {
		p.drop(g)
	} else {
		p.put(g)
	}
	return true
}

// loop runs the calls sent to g until calls is closed, and says on done
// as each one returns. A call that ends the goroutine (runtime.Goexit)
// is told (exited), and done says so as the goroutine ends: also when a
// panic raised during the Goexit was recovered, which does not cancel
// it (the goroutine ends all the same, and must not go back to the
// pool).
func (g *pooled) loop() {
	var c call
	defer func() {
		if c != nil {
			c.exited()
			g.done <- true
		}
		close(g.exited)
	}()
	for c = range g.calls {
		c.run()
		c = nil // not kept while the goroutine is idle
		g.done <- false
	}
}

// put gives g back, its call returned: it runs the next call started,
// unless the pool is closed or holds enough idle goroutines, and then it
// ends.
func (p *pool) put(g *pooled) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.max {
		p.mu.Unlock()
		close(g.calls)
		return
	}
	p.idle = append(p.idle, g)
	p.mu.Unlock()
}

// drop leaves g to the call it runs, which has ended it (runtime.Goexit)
// or which the worker stopped waiting for: g ends as the call returns.
func (p *pool) drop(g *pooled) { close(g.calls) }

// close ends the idle goroutines, and waits for them to end, so that
// none is left once Run returns. The calls have all returned or been
// given up on by then: none is started or given back after.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, g := range idle {
		close(g.calls)
	}
	for _, g := range idle {
		<-g.exited
	}
}
