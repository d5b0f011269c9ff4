package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// defaultRate is the tasks/s of the rate scenario: about the rate at which
// AI flows really run, far below what a worker can take.
const defaultRate = 200

// idleWindow is how long the rate scenario watches Redis before each
// run, its client connected and no worker started, to tell what Redis
// spends on its own (its timer, the client's keep-alive PINGs) from what
// the tasks cost it.
const idleWindow = 2 * time.Second

// rateRun is what one run of the rate scenario measured.
type rateRun struct {
	tasks       int
	tasksPerSec float64   // the rate achieved, from the first enqueue to the last end
	traffic               // per task
	cpu         float64   // µs of this process's CPU per task
	redisCPU    float64   // µs of Redis's CPU per task (every master)
	idleCPU     float64   // ms of Redis's CPU per second with nothing to do (every master, idleWindow before the run)
	shardCPU    []float64 // each master's share of the Redis CPU (0..1)
}

// benchRate runs the tasks of the throughput scenario (a no-op flow that
// reports -events progress events) at a steady -rate for -duration, so
// that the worker waits between tasks, and reports what each task costs:
// where the throughput run shares its round trips among many tasks, here
// each task pays for its own.
func benchRate(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	rate := cfg.Rate
	if rate == 0 {
		rate = defaultRate
	}
	var runs []rateRun
	for i := range cfg.Runs {
		r, err := rateOnce(ctx, e, rate)
		if err != nil {
			return err
		}
		p.note("rate run %d: %.0f tasks/s, %.2f calls/task, %.2f writes/task, %.2f commands/task; cpu us/task: flowbench %.1f, redis %.1f (%.1f less its idle %.2f ms/s)",
			i+1, r.tasksPerSec, r.calls, r.writes, r.commands, r.cpu, r.redisCPU, r.lessIdle(), r.idleCPU)
		runs = append(runs, r)
	}
	par := params("rate", rate, "duration", cfg.Duration, "events", cfg.Events, "concurrency", cfg.Concurrency, "workers", max(cfg.Workers, 1), "backend", cfg.Backend)
	p.figure("rate", "tasks/s", collect(runs, func(r rateRun) float64 { return r.tasksPerSec }), par)
	p.figure("rate", "cpu us/task process", collect(runs, func(r rateRun) float64 { return r.cpu }), par)
	if !e.redis() {
		return nil
	}
	p.figure("rate", "cpu us/task redis", collect(runs, func(r rateRun) float64 { return r.redisCPU }), par)
	p.figure("rate", "redis idle cpu ms/s", collect(runs, func(r rateRun) float64 { return r.idleCPU }), par)
	p.figure("rate", "cpu us/task redis less idle", collect(runs, func(r rateRun) float64 { return r.lessIdle() }), par)
	p.figure("rate", "calls/task", collect(runs, func(r rateRun) float64 { return r.calls }), par)
	p.figure("rate", "writes/task", collect(runs, func(r rateRun) float64 { return r.writes }), par)
	p.figure("rate", "commands/task", collect(runs, func(r rateRun) float64 { return r.commands }), par)
	shardFigures(e, p, "rate", runs, func(r rateRun) ([]float64, []float64) { return r.shardCPU, r.perMaster }, par)
	last := runs[len(runs)-1]
	for _, name := range slices.Sorted(maps.Keys(last.perCommand)) {
		p.note("rate commands/task %-12s %.2f", name, float64(last.perCommand[name])/float64(last.tasks))
	}
	return nil
}

// lessIdle is the Redis CPU per task less what Redis would have spent
// over the same time with nothing to do (idleCPU): what the tasks and the
// worker cost it. The raw figure is redisCPU.
func (r rateRun) lessIdle() float64 {
	if r.tasksPerSec <= 0 {
		return r.redisCPU
	}
	return r.redisCPU - r.idleCPU*1e3/r.tasksPerSec
}

// rateOnce enqueues tasks at a steady rate for the configured duration,
// each from a goroutine of its own at its time, waits until each has
// ended, and measures what they cost from the first enqueue to the last
// end. A few tasks run before, so that the scripts are loaded and the
// connections open.
func rateOnce(ctx context.Context, e *env, rate int) (rateRun, error) {
	cfg := e.cfg
	st, err := e.newStack(ctx)
	if err != nil {
		return rateRun{}, err
	}
	defer st.close()
	var idle float64
	if e.redis() {
		// Redis on its own, before any worker starts.
		idle0, _ := e.redisCPU(ctx)
		began := time.Now()
		select {
		case <-ctx.Done():
			return rateRun{}, ctx.Err()
		case <-time.After(idleWindow):
		}
		idle1, _ := e.redisCPU(ctx)
		idle = float64(idle1-idle0) / float64(time.Millisecond) / time.Since(began).Seconds()
	}
	total := max(1, int(float64(rate)*cfg.Duration.Seconds()))
	reg := registry.New()
	reg.MustRegister("noop", noopFlow(cfg.Events))
	done := newTerminals(st.store, warmups+total)
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg})
	wq, ws := workerPair(st, done)
	for i := range max(cfg.Workers, 1) {
		stop := startNamedWorker(fmt.Sprintf("flowbench-%d", i+1), wq, ws, nil, reg, cfg.Concurrency, providers{})
		defer stop()
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	inputs := json.RawMessage(`{}`)
	for range warmups {
		if _, err := broker.Enqueue(ctx, "noop", inputs, queue.EnqueueOptions{}); err != nil {
			return rateRun{}, fmt.Errorf("enqueue: %w", err)
		}
	}
	for done.n.Load() < warmups {
		select {
		case <-ctx.Done():
			return rateRun{}, fmt.Errorf("waiting for the warm-up tasks: %w", errTimeout)
		case <-time.After(time.Millisecond):
		}
	}
	// Let the worker settle in its wait for the next task.
	time.Sleep(20 * time.Millisecond)

	meter, err := e.meterTraffic(ctx, st)
	if err != nil {
		return rateRun{}, err
	}
	cpu0 := cpuTime()
	redisCPU0, shardCPU0 := e.redisCPU(ctx)
	period := time.Second / time.Duration(rate)
	errs := make(chan error, 1)
	start := time.Now()
	for k := range total {
		if d := time.Until(start.Add(time.Duration(k) * period)); d > 0 {
			time.Sleep(d)
		}
		go func() {
			if _, err := broker.Enqueue(ctx, "noop", inputs, queue.EnqueueOptions{}); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	select {
	case <-done.done:
	case err := <-errs:
		return rateRun{}, fmt.Errorf("enqueue: %w", err)
	case <-ctx.Done():
		return rateRun{}, fmt.Errorf("%d of %d tasks ended: %w", done.n.Load()-warmups, total, errTimeout)
	}
	elapsed := time.Since(start)
	if err := done.check(); err != nil {
		return rateRun{}, err
	}
	n := float64(total)
	redisCPU1, shardCPU1 := e.redisCPU(ctx)
	r := rateRun{
		tasks:       total,
		tasksPerSec: n / elapsed.Seconds(),
		cpu:         float64(cpuTime()-cpu0) / n / float64(time.Microsecond),
		redisCPU:    float64(redisCPU1-redisCPU0) / n / float64(time.Microsecond),
		idleCPU:     idle,
		shardCPU:    shares(shardCPU0, shardCPU1),
	}
	r.traffic, err = meter.perTask(ctx, total)
	return r, err
}
