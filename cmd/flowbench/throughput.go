package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// terminals wraps the worker's progress store to notice, without asking
// Redis, when every task has reached its terminal state.
type terminals struct {
	progress.Store
	want    int64
	n       atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Value // string: the status of a failure
	done    chan struct{}
}

func newTerminals(s progress.Store, want int) *terminals {
	return &terminals{Store: s, want: int64(want), done: make(chan struct{})}
}

func (t *terminals) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	last, err := t.Store.Append(ctx, id, events...)
	t.appended(events, err)
	return last, err
}

// appended counts the terminal event of events if they were recorded.
func (t *terminals) appended(events []progress.Event, err error) {
	if err == nil && len(events) > 0 && events[len(events)-1].Terminal() {
		if e := events[len(events)-1]; e.State == progress.StateFailure {
			t.failed.Add(1)
			t.lastErr.Store(e.Status)
		}
		if t.n.Add(1) == t.want {
			close(t.done)
		}
	}
}

// oneStepBackend is a backend that is also the store and offers the
// one-step path a queue.Worker takes when its store is its backend (see
// queue.NewWorker): the methods the Redis backend has for it.
type oneStepBackend interface {
	queue.Backend
	AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (string, bool, error)
	FetchWithState(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, []progress.State, error)
}

// finishingTerminals is terminals for a backend that offers the one-step
// path: passed as both the worker's backend and its store, it keeps the
// worker on that path (successes recorded through AppendAndAck, states
// read with the leases), as it would be with the backend itself.
type finishingTerminals struct {
	oneStepBackend
	*terminals
}

// AppendAndAck is the backend's, counted.
func (t *finishingTerminals) AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (string, bool, error) {
	last, acked, err := t.oneStepBackend.AppendAndAck(ctx, l, events...)
	t.appended(events, err)
	return last, acked, err
}

// presentTerminals is finishingTerminals for a backend that also keeps
// a worker registry and retires workers, as the Redis backend does: the
// worker heartbeats, and retires when it stops, as it would with the
// backend itself (a heartbeat is one script a second, part of what a
// run costs Redis). The embedded interfaces pass those calls on.
type presentTerminals struct {
	*finishingTerminals
	queue.WorkerRegistry
	queue.Retirer
}

// An ambiguous embedded method would drop out of the method set silently.
var (
	_ queue.WorkerRegistry = (*presentTerminals)(nil)
	_ queue.Retirer        = (*presentTerminals)(nil)
)

// workerPair returns the backend and store a worker of the throughput
// run takes, with done watching the store.
func workerPair(st *stack, done *terminals) (queue.Backend, progress.Store) {
	if b, ok := st.queue.(oneStepBackend); ok && any(st.queue) == any(st.store) {
		ft := &finishingTerminals{oneStepBackend: b, terminals: done}
		reg, isReg := b.(queue.WorkerRegistry)
		retirer, isRetirer := b.(queue.Retirer)
		if isReg && isRetirer {
			pt := &presentTerminals{finishingTerminals: ft, WorkerRegistry: reg, Retirer: retirer}
			return pt, pt
		}
		return ft, ft
	}
	return st.queue, done
}

func (t *terminals) check() error {
	if f := t.failed.Load(); f > 0 {
		return fmt.Errorf("%d tasks failed, the last one with %q", f, t.lastErr.Load())
	}
	return nil
}

// worker runs a queue.Worker on st with the flows of reg until stop is
// called; stop waits for it to finish what it holds. The flows' steps are
// recorded in cps (nil: in store, if it keeps checkpoints).
func startWorker(backend queue.Backend, store progress.Store, cps progress.CheckpointStore, reg *registry.Registry, concurrency int, p providers, hooks ...queue.FinishHook) (stop func()) {
	return startNamedWorker("flowbench", backend, store, cps, reg, concurrency, p, hooks...)
}

// startNamedWorker is startWorker for a worker of the given name: workers
// of one queue need names of their own.
func startNamedWorker(name string, backend queue.Backend, store progress.Store, cps progress.CheckpointStore, reg *registry.Registry, concurrency int, p providers, hooks ...queue.FinishHook) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	w := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry:       reg,
		Name:           name,
		Concurrency:    concurrency,
		OnFinish:       hooks,
		Checkpoints:    cps,
		Logger:         discard,
		TracerProvider: p.tp,
		MeterProvider:  p.mp,
	})
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// noopFlow reports events progress events and returns.
func noopFlow(events int) flow.Flow { return stepsFlow(events, 0) }

// stepOutput is the output of each step of stepsFlow: 1 KB, about a
// short answer of a model.
var stepOutput = strings.Repeat("a", 1022)

// stepsFlow reports events progress events, then runs steps flow.Step
// calls, each returning stepOutput, and returns.
func stepsFlow(events, steps int) flow.Flow {
	return flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		for i := 1; i <= events; i++ {
			t.Progress.Progress(i*100/(events+1), "")
		}
		for i := range steps {
			if _, err := flow.Step(ctx, t, "step "+strconv.Itoa(i), func(context.Context) (string, error) { return stepOutput, nil }); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
}

// throughputRun is what one throughput run measured.
type throughputRun struct {
	tasksPerSec float64
	traffic               // per task
	cpu         float64   // cores used by this process
	redisCPU    float64   // cores used by Redis (every master)
	shardCPU    []float64 // each master's share of the Redis CPU (0..1)
	enqueued    float64   // tasks/s enqueued, while the worker runs
	allocs      float64   // heap allocations of this process per task
	schedP99    float64   // goroutines' wait to run, p99 (seconds)
}

func benchThroughput(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	// The runs of the -otel modes alternate, so that each mode sees the
	// same load on the machine.
	runsOf := map[string][]throughputRun{}
	var runs []throughputRun
	for i := range cfg.Runs {
		for _, mode := range cfg.OTel {
			r, err := throughputOnce(ctx, e, mode)
			if err != nil {
				return err
			}
			p.note("throughput run %d (otel %s): %.0f tasks/s, %.2f calls/task, %.2f writes/task, %.2f commands/task; cores used: flowbench %.2f, redis %.2f; enqueued at %.0f tasks/s; %.1f allocations/task; goroutines waited to run %.2f ms at p99",
				i+1, mode, r.tasksPerSec, r.calls, r.writes, r.commands, r.cpu, r.redisCPU, r.enqueued, r.allocs, r.schedP99*1e3)
			runsOf[mode] = append(runsOf[mode], r)
			runs = append(runs, r)
		}
	}
	par := params("n", cfg.N, "concurrency", cfg.Concurrency, "events", cfg.Events, "steps", cfg.Steps, "hooks", cfg.Hooks, "notify", cfg.Notify, "producers", cfg.Producers, "backend", cfg.Backend)
	if cfg.wants("throughput") {
		for _, mode := range cfg.OTel {
			runs := runsOf[mode]
			par := par + " otel=" + mode
			if mode == otelSampled {
				par += fmt.Sprintf(" otel-ratio=%g", cfg.OTelRatio)
			}
			p.figure("throughput", "tasks/s", collect(runs, func(r throughputRun) float64 { return r.tasksPerSec }), par)
			// CPU per task: what the run costs whatever else the machine does.
			p.figure("throughput", "cpu us/task process", collect(runs, func(r throughputRun) float64 { return r.cpu / r.tasksPerSec * 1e6 }), par)
			if e.redis() {
				p.figure("throughput", "cpu us/task redis", collect(runs, func(r throughputRun) float64 { return r.redisCPU / r.tasksPerSec * 1e6 }), par)
			}
			p.figure("throughput", "allocs/task process", collect(runs, func(r throughputRun) float64 { return r.allocs }), par)
			shardFigures(e, p, "throughput", runs, func(r throughputRun) ([]float64, []float64) { return r.shardCPU, r.perMaster }, par)
			if mode != otelNone && len(runsOf[otelNone]) > 0 {
				base, _, _ := summarize(collect(runsOf[otelNone], func(r throughputRun) float64 { return r.cpu / r.tasksPerSec }))
				with, _, _ := summarize(collect(runs, func(r throughputRun) float64 { return r.cpu / r.tasksPerSec }))
				p.note("otel %s: process CPU per task %+.1f%% against none (medians of %d alternating runs each)", mode, (with/base-1)*100, len(runs))
			}
		}
	}
	if cfg.wants("roundtrips") && e.redis() {
		p.figure("roundtrips", "calls/task", collect(runs, func(r throughputRun) float64 { return r.calls }), par)
		p.figure("roundtrips", "writes/task", collect(runs, func(r throughputRun) float64 { return r.writes }), par)
		p.figure("roundtrips", "commands/task", collect(runs, func(r throughputRun) float64 { return r.commands }), par)
		last := runs[len(runs)-1].perCommand
		for _, name := range slices.Sorted(maps.Keys(last)) {
			p.note("commands/task %-12s %.2f", name, float64(last[name])/float64(cfg.N))
		}
	}
	return nil
}

func collect[T any](runs []T, f func(T) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

func throughputOnce(ctx context.Context, e *env, otelMode string) (throughputRun, error) {
	cfg := e.cfg
	tel := newProviders(otelMode, cfg.OTelRatio)
	defer tel.shutdown()
	st, err := e.newStack(ctx)
	if err != nil {
		return throughputRun{}, err
	}
	defer st.close()
	reg := registry.New()
	reg.MustRegister("noop", stepsFlow(cfg.Events, cfg.Steps))
	ends := cfg.N
	if cfg.Notify {
		ends *= 2 // each task and its notification
	}
	done := newTerminals(st.store, ends)
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg, TracerProvider: tel.tp, MeterProvider: tel.mp})

	wq, ws := workerPair(st, done)
	hooks := make([]queue.FinishHook, cfg.Hooks)
	for i := range hooks {
		hooks[i] = func(context.Context, queue.Finished) error { return nil }
	}
	if cfg.Notify {
		// The notifications are enqueued as a host's hook would, through
		// a broker on the backend itself: the worker's wrapper (see
		// workerPair) has no one-step create, so a broker on it would
		// take two steps per notification that a host does not.
		n, err := notify.New(notify.Config{
			Queue:    queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg, Logger: discard}),
			Channels: []notify.Channel{nopChannel{}},
			Logger:   discard,
		})
		if err != nil {
			return throughputRun{}, err
		}
		if err := n.Register(reg); err != nil {
			return throughputRun{}, err
		}
		hooks = append(hooks, n.Hook())
	}
	// The worker's store is wrapped (see workerPair): its steps are
	// recorded in the stack's store itself.
	cps, _ := st.store.(progress.CheckpointStore)
	stopWorker := startWorker(wq, ws, cps, reg, cfg.Concurrency, tel, hooks...)
	workerStopped := false
	defer func() {
		if !workerStopped {
			stopWorker()
		}
	}()
	// Let the worker subscribe and block in Fetch before counting.
	time.Sleep(50 * time.Millisecond)

	meter, err := e.meterTraffic(ctx, st)
	if err != nil {
		return throughputRun{}, err
	}

	ctx, cancel := context.WithTimeout(ctx, timeoutFor(cfg.N))
	defer cancel()
	inputs := json.RawMessage(`{}`)
	cpu0 := cpuTime()
	redisCPU0, shardCPU0 := e.redisCPU(ctx)
	sched0, mallocs0 := schedLatencies(), mallocs()
	var next atomic.Int64
	errs := make(chan error, cfg.Producers)
	start := time.Now()
	for range cfg.Producers {
		go func() {
			for next.Add(1) <= int64(cfg.N) {
				if _, err := broker.Enqueue(ctx, "noop", inputs, queue.EnqueueOptions{}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range cfg.Producers {
		if err := <-errs; err != nil {
			return throughputRun{}, fmt.Errorf("enqueue: %w", err)
		}
	}
	enqueued := time.Since(start)
	select {
	case <-done.done:
	case <-ctx.Done():
		return throughputRun{}, fmt.Errorf("%d of %d tasks ended before the timeout: %w", done.n.Load(), cfg.N, ctx.Err())
	}
	elapsed := time.Since(start)
	sched1, mallocs1 := schedLatencies(), mallocs()
	redisCPU1, shardCPU1 := e.redisCPU(ctx)
	if err := done.check(); err != nil {
		return throughputRun{}, err
	}
	r := throughputRun{
		tasksPerSec: float64(cfg.N) / elapsed.Seconds(),
		cpu:         float64(cpuTime()-cpu0) / float64(elapsed),
		redisCPU:    float64(redisCPU1-redisCPU0) / float64(elapsed),
		shardCPU:    shares(shardCPU0, shardCPU1),
		enqueued:    float64(cfg.N) / enqueued.Seconds(),
		allocs:      float64(mallocs1-mallocs0) / float64(cfg.N),
		schedP99:    schedQuantile(sched0, sched1, 0.99),
	}

	// Stop the worker so that the last acknowledgements are counted too.
	stopWorker()
	workerStopped = true
	r.traffic, err = meter.perTask(context.WithoutCancel(ctx), cfg.N)
	return r, err
}

// nopChannel is a notify.Channel that delivers nothing, at once: what a
// notification costs the engine, without the cost of sending it.
type nopChannel struct{}

func (nopChannel) Name() string                                        { return "nop" }
func (nopChannel) Deliver(context.Context, *notify.Notification) error { return nil }

// timeoutFor bounds a run of n tasks: generous, so that only a stuck run
// hits it.
func timeoutFor(n int) time.Duration {
	return 2*time.Minute + time.Duration(n)*time.Millisecond
}

// errTimeout says that a run did not complete in time.
var errTimeout = errors.New("run did not complete in time")
