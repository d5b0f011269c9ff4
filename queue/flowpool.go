package queue

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redact"
)

// flowPool keeps the goroutines that run flows, so that the stack one
// has grown for a flow is there for the next. A goroutine started for
// each flow grows its stack from 2 KB again every time, copying it at
// each doubling: about 13,700 instructions of a task that does nothing
// but report progress with the GC off (a tenth), 8,300 with the default
// GOGC (see BENCHMARKS.md, "flows on goroutines the worker keeps").
//
// A flow takes the goroutine that came back last, whose stack is the
// likeliest to be in the CPU's caches, and starts one when none is idle:
// there are as many as flows have run at once, at most the worker's
// Concurrency, fewer when flows are short. The price is memory: an idle
// goroutine keeps the stack its flows grew, as much as the deepest of
// them took, until collections halve it (the GC halves the stack of a
// goroutine that uses under a quarter of it).
//
// A flow's panic is recovered in the call of that flow (see
// job.callFlow), and its goroutine goes back to the pool. A flow that
// ends its goroutine (runtime.Goexit) takes it along, and so does a flow
// abandoned (see WorkerConfig.AbandonAfter), whose goroutine ends when
// it returns (see drop). Run closes the pool as it ends, ending the idle
// goroutines (see close).
//
// A flow should leave its goroutine as it found it, as a net/http
// handler leaves its connection's: a thread it locked
// (runtime.LockOSThread) unlocked, and goroutine labels set with
// pprof.Do rather than pprof.SetGoroutineLabels.
type flowPool struct {
	max int // idle goroutines kept, at most

	mu     sync.Mutex
	idle   []*flowGoroutine // the last one back last
	closed bool
}

func newFlowPool(max int) *flowPool { return &flowPool{max: max} }

// flowGoroutine is a goroutine of a flowPool, and how to talk to it.
type flowGoroutine struct {
	// runs takes the flows to run to the goroutine. Closing it ends the
	// goroutine once its flow returns.
	runs chan flowRun
	// done receives each run's outcome: buffered, so that an abandoned
	// flow's goroutine never waits for the worker.
	done chan outcome
	// exited is closed as the goroutine ends.
	exited chan struct{}
}

// flowRun is one run of a flow (see job.callFlow).
type flowRun struct {
	j      *job
	f      flow.Flow
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// start runs run on an idle goroutine of the pool, or on a new one if
// none is idle, and returns that goroutine: its done channel receives
// the outcome. The caller gives it back with put, or with drop.
func (p *flowPool) start(run flowRun) *flowGoroutine {
	p.mu.Lock()
	var g *flowGoroutine
	if n := len(p.idle); n > 0 {
		g = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	if g == nil {
		g = &flowGoroutine{runs: make(chan flowRun), done: make(chan outcome, 1), exited: make(chan struct{})}
		go g.loop()
	}
	g.runs <- run
	return g
}

// loop runs the flows sent to g until runs is closed, and sends each
// one's outcome on done. A flow that ends the goroutine (runtime.Goexit)
// has its outcome sent as the goroutine ends, marked goexit: also when
// callFlow recovered a panic raised during the Goexit, which a recover
// does not cancel (the goroutine ends all the same, and must not go back
// to the pool).
func (g *flowGoroutine) loop() {
	var (
		run     flowRun
		out     outcome
		calling bool
	)
	defer func() {
		if calling {
			out.goexit = true
			if out.err == nil {
				out.err, out.cause = errGoexit, context.Cause(run.ctx)
			}
			g.done <- out
		}
		close(g.exited)
	}()
	for run = range g.runs {
		out, calling = outcome{}, true
		run.j.callFlow(run.ctx, run.cancel, run.f, &out)
		calling = false
		g.done <- out
		run, out = flowRun{}, outcome{} // not kept while the goroutine is idle
	}
}

// put gives g back, its flow's outcome received: it runs the next flow
// started, unless the pool is closed or holds enough idle goroutines,
// and then it ends.
func (p *flowPool) put(g *flowGoroutine) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.max {
		p.mu.Unlock()
		close(g.runs)
		return
	}
	p.idle = append(p.idle, g)
	p.mu.Unlock()
}

// drop leaves g to the flow it runs, which has ended it (runtime.Goexit)
// or is abandoned: g ends as the flow returns.
func (p *flowPool) drop(g *flowGoroutine) { close(g.runs) }

// close ends the idle goroutines, and waits for them to end, so that
// none is left once Run returns. The flows have all returned or been
// abandoned by then: none is started or given back after.
func (p *flowPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, g := range idle {
		close(g.runs)
	}
	for _, g := range idle {
		<-g.exited
	}
}

// callFlow runs f, the flow of j's task, with the run's context ctx,
// and writes its outcome into out, recovering its panic. It runs on a
// goroutine of the worker's flowPool (see flowGoroutine.loop, which
// sends the outcome, and makes the outcome of a flow that ends that
// goroutine with runtime.Goexit), and returns to it unless the flow ends
// the goroutine.
func (j *job) callFlow(ctx context.Context, cancel context.CancelCauseFunc, f flow.Flow, out *outcome) {
	t := j.task
	defer func() {
		if v := recover(); v != nil {
			j.logger().Error("flows: flow panicked", "panic", redact.Text(fmt.Sprint(v)), "stack", string(debug.Stack()))
			*out = outcome{err: &panicError{value: v}, cause: context.Cause(ctx)}
		}
	}()
	res, err := f.Run(j.flowContext(ctx, cancel), &flow.Task{
		ID: t.ID, Flow: t.Flow, Attempt: t.Attempt, Inputs: t.Inputs, Progress: j.rep,
		Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{
			Store: j.w.cfg.Checkpoints, TaskID: t.ID, Attempt: t.Attempt, ResumeFrom: t.resumeFrom(),
			Flush: j.rep.Flush, Progress: j.rep, Logger: j.w.log, MaxOutputBytes: j.w.cfg.MaxReportBytes,
		}),
	})
	// The cause is read as the flow returns: a cancellation, time
	// limit or shutdown landing after that does not undo its result.
	o := outcome{cause: context.Cause(ctx)}
	// What the flow returned is looked at here, under the recover
	// above, before it leaves the flow's goroutine.
	o.result, o.err = examine(res, err, j.w.cfg.MaxReportBytes)
	if hook := j.w.flowReturned; hook != nil {
		hook(t.ID)
	}
	*out = o
}
