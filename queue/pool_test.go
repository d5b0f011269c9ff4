package queue_test

import (
	"context"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// TestWorkerKeepsFlowGoroutines: flows that run one after the other run
// on one goroutine, which the worker keeps, so that the stack it grew
// for one is there for the next; a flow that panics leaves it to the
// next (the panic is recovered per task, as ever); a flow that ends it
// (runtime.Goexit) or is abandoned takes it along, and the next flow
// runs on another. Once Run returns, no goroutine is left: the
// abandoned flow's ends as its flow returns.
func TestWorkerKeepsFlowGoroutines(t *testing.T) {
	baseline := runtime.NumGoroutine()
	s := newSetup()
	ran := make(chan int, 1) // the goroutine of the last "where" flow
	release := make(chan struct{})
	s.reg.MustRegister("where", flow.Func(func(context.Context, *flow.Task) (any, error) {
		ran <- queue.GoroutineID()
		return nil, nil
	}))
	s.reg.MustRegister("panics", flow.Func(func(context.Context, *flow.Task) (any, error) { panic("boom") }))
	s.reg.MustRegister("exits", flow.Func(func(context.Context, *flow.Task) (any, error) {
		runtime.Goexit()
		return nil, nil
	}))
	s.reg.MustRegister("stuck", flow.Func(func(context.Context, *flow.Task) (any, error) {
		<-release // deaf to its context: it is abandoned
		return nil, nil
	}))
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, AbandonAfter: time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	stop := runWorker(t, w)

	// run enqueues a task of name, waits for its end and returns it.
	run := func(name string, opts queue.EnqueueOptions) progress.Snapshot {
		t.Helper()
		opts.MaxAttempts = 1
		return waitTerminal(t, s.store, s.enqueue(t, name, opts))
	}
	where := func() int {
		t.Helper()
		assert.Equal(t, progress.StateSuccess, run("where", queue.EnqueueOptions{}).State)
		return <-ran
	}

	first := where()
	assert.Equal(t, first, where(), "the second flow runs on the goroutine of the first")

	snap := run("panics", queue.EnqueueOptions{})
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "panic: boom", snap.Details.Status)
	assert.Equal(t, first, where(), "a panic recovered leaves the goroutine to the next flow")

	snap = run("exits", queue.EnqueueOptions{})
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "flow ended its goroutine (runtime.Goexit) without returning", snap.Details.Status)
	second := where()
	assert.NotEqual(t, first, second, "a goroutine the flow ended is not used again")
	assert.Equal(t, second, where())

	snap = run("stuck", queue.EnqueueOptions{Timeout: time.Millisecond})
	assert.Equal(t, progress.StateFailure, snap.State)
	third := where()
	assert.NotEqual(t, second, third, "the goroutine of an abandoned flow is left to it")
	assert.Equal(t, third, where())

	stop()
	close(release) // the abandoned flow returns; its goroutine ends
	leakcheck.Settle(t, baseline, waitLong)
}

// TestWorkerFlowGoexitAfterRecoveredPanic: a flow that ends its goroutine
// (runtime.Goexit) while a deferred call of its own panics has the panic
// recovered by the worker, and the Goexit goes on (the runtime does not
// let a recover cancel a Goexit): the goroutine ends all the same. The
// worker must not keep it for the next flow, which would then wait
// forever for a goroutine that is gone, holding its task and the
// worker's only slot, and keep Run from returning.
func TestWorkerFlowGoexitAfterRecoveredPanic(t *testing.T) {
	baseline := runtime.NumGoroutine()
	s := newSetup()
	s.reg.MustRegister("exits-panicking", flow.Func(func(context.Context, *flow.Task) (any, error) {
		defer func() { panic("cleanup failed") }()
		runtime.Goexit()
		return nil, nil
	}))
	s.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, Logger: slog.New(slog.DiscardHandler),
	})
	stop := runWorker(t, w)

	snap := waitTerminal(t, s.store, s.enqueue(t, "exits-panicking", queue.EnqueueOptions{MaxAttempts: 1}))
	assert.Equal(t, progress.StateFailure, snap.State)
	snap = waitTerminal(t, s.store, s.enqueue(t, "ok", queue.EnqueueOptions{MaxAttempts: 1}))
	assert.Equal(t, progress.StateSuccess, snap.State, "the next flow runs")

	stop()
	leakcheck.Settle(t, baseline, waitLong)
}

// recv returns what ch receives, failing t if nothing comes within
// waitLong.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLong):
		require.FailNow(t, "timed out waiting for "+what)
	}
	panic("unreachable")
}

// TestWorkerRunsHooksOnFlowGoroutines: the finish hooks of a task run on
// a goroutine the worker keeps, the one its flow ran on, not on one
// started for them. A hook that panics leaves that goroutine to the
// next task; a hook that ends it (runtime.Goexit, even with a panic
// recovered on the way) takes it along, and so does one that does not
// return in time (it ignores its context): the worker goes on with its
// only slot, on another goroutine, the hooks after the one that ended
// or hangs skipped. Run returns while a hook hangs, and once that hook
// returns no goroutine is left.
func TestWorkerRunsHooksOnFlowGoroutines(t *testing.T) {
	baseline := runtime.NumGoroutine()
	s := newSetup()
	ran := make(chan int, 1)    // the goroutine of the last "where" flow
	hooked := make(chan int, 8) // the goroutine of each call of the last hook
	hanging := make(chan struct{}, 2)
	release := make(chan struct{})
	s.reg.MustRegister("where", flow.Func(func(context.Context, *flow.Task) (any, error) {
		ran <- queue.GoroutineID()
		return nil, nil
	}))
	skipped := make(chan string, 8) // the flows of tasks whose last hook ran though it should not have
	for _, name := range []string{"hook-panics", "hook-exits", "hook-exits-panicking", "hook-hangs"} {
		s.reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	}
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, FinishHookTimeout: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		OnFinish: []queue.FinishHook{
			func(_ context.Context, f queue.Finished) error {
				switch f.Task.Flow {
				case "hook-panics":
					panic("boom")
				case "hook-exits":
					runtime.Goexit()
				case "hook-exits-panicking":
					defer func() { panic("cleanup failed") }()
					runtime.Goexit()
				case "hook-hangs":
					hanging <- struct{}{}
					<-release // deaf to its context
				}
				return nil
			},
			func(_ context.Context, f queue.Finished) error {
				switch f.Task.Flow {
				case "hook-exits", "hook-exits-panicking", "hook-hangs":
					skipped <- f.Task.Flow
				default:
					hooked <- queue.GoroutineID()
				}
				return nil
			},
		},
	})
	stop := runWorker(t, w)

	run := func(name string) {
		t.Helper()
		assert.Equal(t, progress.StateSuccess, waitTerminal(t, s.store, s.enqueue(t, name, queue.EnqueueOptions{MaxAttempts: 1})).State)
	}
	// where runs a "where" task and returns the goroutine of its flow,
	// checking that its hooks ran on it.
	where := func() int {
		t.Helper()
		run("where")
		g := recv(t, ran, "the flow")
		assert.Equal(t, g, recv(t, hooked, "the hooks"), "the hooks run on the flow's goroutine")
		return g
	}

	first := where()
	assert.Equal(t, first, where())

	run("hook-panics")
	assert.Equal(t, first, recv(t, hooked, "the hook after the panicking one"), "a hook's panic recovered leaves the goroutine to the next hook")
	assert.Equal(t, first, where(), "and to the next task")

	prev := first
	for _, name := range []string{"hook-exits", "hook-exits-panicking", "hook-hangs"} {
		run(name)
		next := where() // the worker went on with its only slot
		assert.NotEqual(t, prev, next, "%s: the goroutine is not used again", name)
		assert.Equal(t, next, where())
		prev = next
	}
	recv(t, hanging, "the hanging hook")

	// Run returns while a hook hangs.
	run("hook-hangs")
	recv(t, hanging, "the second hanging hook")
	stop()
	close(release)
	leakcheck.Settle(t, baseline, waitLong)
	assert.Empty(t, skipped, "the hooks after one that ended its goroutine or hung are skipped")
}

// TestWorkerHookAsksAgainThenAnotherHangs: a hook's ErrRetryHooks is
// heard though a hook after it does not return in time: the task is
// given back and its hooks run again.
func TestWorkerHookAsksAgainThenAnotherHangs(t *testing.T) {
	baseline := runtime.NumGoroutine()
	s := newSetup()
	s.reg.MustRegister("once", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	release := make(chan struct{})
	calls := make(chan bool, 4) // FoundEnded of each call of the first hook
	w := queue.NewWorker(s.mem, s.store, queue.WorkerConfig{
		Registry: s.reg, Concurrency: 1, FinishHookTimeout: 20 * time.Millisecond, Backoff: fastBackoff,
		Logger: slog.New(slog.DiscardHandler),
		OnFinish: []queue.FinishHook{
			func(_ context.Context, f queue.Finished) error {
				calls <- f.FoundEnded
				if !f.FoundEnded {
					return queue.ErrRetryHooks
				}
				return nil
			},
			func(_ context.Context, f queue.Finished) error {
				if !f.FoundEnded {
					<-release // deaf to its context
				}
				return nil
			},
		},
	})
	stop := runWorker(t, w)
	s.enqueue(t, "once", queue.EnqueueOptions{})
	assert.False(t, recv(t, calls, "the hooks"))
	assert.True(t, recv(t, calls, "the hooks again"), "the hooks run again, on a lease that found the task ended")
	stop()
	close(release)
	leakcheck.Settle(t, baseline, waitLong)
}
