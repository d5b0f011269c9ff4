// Package failover measures what a Redis Sentinel failover costs a
// running flows deployment, for a test of queue/redisbackend and for the
// benchmark command's failover scenario.
//
// Run starts a primary, one replica and three sentinels (package
// redisproc), a web process's backend and a worker's, each on a rueidis
// client that finds the primary through the sentinels, and enqueues
// tasks at a steady rate. Then it kills the primary with SIGKILL, waits
// for the sentinels to promote the replica, restarts the old primary as a
// replica of the new one (as an orchestrator aware of the sentinels
// would), goes on enqueueing until tasks are accepted again and for a
// while after, and waits for every task that was accepted to end. It reports the tasks lost (accepted
// but never ended), those run more than once, and how long the system
// took to accept and to finish tasks again.
package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// Options configures a run. The zero value enqueues 200 tasks/s for a
// second before the kill and for two seconds after tasks are accepted
// again, without durable mode.
type Options struct {
	// WaitReplicas is the backends' redisbackend.Config.WaitReplicas:
	// 1 for durable mode.
	WaitReplicas int
	// Rate is the tasks enqueued per second; zero means 200.
	Rate int
	// Before and After are how long tasks are enqueued before the kill,
	// and after they are accepted again; zero means one and two seconds.
	Before, After time.Duration
	// LinkDown, when set, cuts the replica off that long before the
	// kill, as a network partition would: the replica is stopped
	// (SIGSTOP) and the primary drops its connection (CLIENT KILL TYPE
	// replica), and the replica is resumed right after the kill. What the
	// primary accepts meanwhile is not on the replica when the primary
	// dies, and a failover loses it. It must be shorter than Before.
	LinkDown time.Duration
	// Settle bounds the wait for the accepted tasks to end; zero means a
	// minute. Those that have not ended by then are lost.
	Settle time.Duration
	// Logger receives the backends' and the worker's logs; nil discards
	// them.
	Logger *slog.Logger
}

// Result is what a run measured.
type Result struct {
	// Accepted is the number of tasks whose Enqueue succeeded; Refused
	// those whose Enqueue failed (the primary was gone, or in durable
	// mode no replica confirmed the task in time).
	Accepted, Refused int
	// Lost are the accepted tasks that never ended: their records were
	// lost with the primary, or they never ran.
	Lost []string
	// LostStates tells, for each of Lost, what Redis held of it and the
	// log lines that named it when the run gave up waiting.
	LostStates []LostTask
	// Duplicated is the number of accepted tasks whose flow started more
	// than once.
	Duplicated int
	// DoubleEnded is the number of tasks with more than one terminal
	// event, which must be zero.
	DoubleEnded int
	// FailedOver is the time from the kill until the sentinels named the
	// new primary and it said it was one.
	FailedOver time.Duration
	// Accepting is the time from the kill until the first task enqueued
	// after it was accepted; Finishing until the first of those ended.
	Accepting, Finishing time.Duration
}

// Run runs the scenario once (see the package documentation) and tears
// everything down.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Rate <= 0 {
		opts.Rate = 200
	}
	if opts.Before <= 0 {
		opts.Before = time.Second
	}
	if opts.LinkDown >= opts.Before {
		return Result{}, fmt.Errorf("failover: the replica's link must be down for less (%v) than the time before the kill (%v)", opts.LinkDown, opts.Before)
	}
	if opts.After <= 0 {
		opts.After = 2 * time.Second
	}
	if opts.Settle <= 0 {
		opts.Settle = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	logs := &taskLogs{}
	opts.Logger = slog.New(&logHandler{next: opts.Logger.Handler(), logs: logs})
	set, err := redisproc.StartSentinel(redisproc.SentinelOptions{})
	if err != nil {
		return Result{}, err
	}
	defer set.Close()
	r := &run{opts: opts, started: map[string]int{}, ended: map[string]time.Time{}}
	web, webClient, closeWeb, err := r.backend(set)
	if err != nil {
		return Result{}, err
	}
	defer closeWeb()
	worker, _, closeWorker, err := r.backend(set)
	if err != nil {
		return Result{}, err
	}
	defer closeWorker()
	flows := r.flows()
	stopWorker := r.startWorker(worker, flows)
	defer stopWorker()

	broker := queue.NewBroker(web, nil, queue.BrokerConfig{Registry: flows, MaxAttempts: 20, Logger: opts.Logger})
	produce, cancelProduce := context.WithCancel(ctx)
	defer cancelProduce()
	var producer sync.WaitGroup
	producer.Go(func() { r.produce(produce, broker) })

	var res Result
	if !sleep(ctx, opts.Before-opts.LinkDown) {
		return res, ctx.Err()
	}
	old, err := set.Primary()
	if err != nil {
		return res, err
	}
	resume := func() {}
	if opts.LinkDown > 0 {
		for _, d := range set.Data {
			if d != old {
				if resume, err = d.Freeze(); err != nil {
					return res, err
				}
			}
		}
		defer resume()
		if _, err := redisproc.Do(old.Addr(), "CLIENT", "KILL", "TYPE", "replica"); err != nil {
			return res, fmt.Errorf("failover: drop the replica's link: %w", err)
		}
		if !sleep(ctx, opts.LinkDown) {
			return res, ctx.Err()
		}
	}
	r.mu.Lock()
	r.killedAt = time.Now()
	r.mu.Unlock()
	old.Kill()
	resume()
	if _, err := set.WaitFailover(old); err != nil {
		return res, err
	}
	res.FailedOver = time.Since(r.killedAt)
	if err := set.Rejoin(old); err != nil {
		return res, fmt.Errorf("failover: restart the old primary as a replica: %w", err)
	}
	// Enqueue until tasks are accepted again, then for opts.After.
	for !r.acceptingAgain() {
		if !sleep(ctx, 10*time.Millisecond) {
			return res, ctx.Err()
		}
		if time.Since(r.killedAt) > opts.Settle {
			return res, fmt.Errorf("failover: no task accepted within %v of the kill", opts.Settle)
		}
	}
	if !sleep(ctx, opts.After) {
		return res, ctx.Err()
	}
	cancelProduce()
	producer.Wait()

	res.Lost = r.settle(ctx, web)
	if len(res.Lost) > 0 {
		res.LostStates = explain(ctx, webClient, web.Prefix(), web.Queue(), res.Lost, logs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range res.LostStates {
		res.LostStates[i].Started = r.started[res.LostStates[i].ID]
	}
	res.Accepted, res.Refused = len(r.accepted), r.refused
	for _, a := range r.accepted {
		if r.started[a.id] > 1 {
			res.Duplicated++
		}
	}
	res.DoubleEnded = r.doubleEnded
	res.Accepting, res.Finishing = r.recovery()
	return res, nil
}

// run is the state of one Run.
type run struct {
	opts Options

	mu       sync.Mutex
	killedAt time.Time
	// accepted are the tasks whose Enqueue succeeded, with the time it
	// was called.
	accepted    []acceptedTask
	refused     int
	started     map[string]int       // flow starts per task
	ended       map[string]time.Time // first recorded end per task
	doubleEnded int
}

type acceptedTask struct {
	id               string
	called, returned time.Time
}

// backend returns a backend on a client of its own that reaches the
// primary through the sentinels, and that client.
func (r *run) backend(set *redisproc.Sentinel) (*redisbackend.Backend, rueidis.Client, func(), error) {
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:  set.SentinelAddrs(),
		Sentinel:     rueidis.SentinelOption{MasterSet: set.MasterName()},
		DisableCache: true,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failover: connect through the sentinels: %w", err)
	}
	b, err := redisbackend.New(client, redisbackend.Config{
		WaitReplicas: r.opts.WaitReplicas,
		OpTimeout:    2 * time.Second,
		Logger:       r.opts.Logger,
	})
	if err != nil {
		client.Close()
		return nil, nil, nil, err
	}
	return b, client, func() {
		_ = b.Close()
		client.Close()
	}, nil
}

// stepsFlow is the flow of the run's tasks: three log steps, a few
// milliseconds apart, like a short chain.
const stepsFlow = "steps"

// flows returns the registry of the run's one flow, which counts its
// starts per task.
func (r *run) flows() *registry.Registry {
	reg := registry.New()
	reg.MustRegister(stepsFlow, flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		r.mu.Lock()
		r.started[t.ID]++
		r.mu.Unlock()
		for i := range 3 {
			t.Progress.Log(fmt.Sprintf("step %d", i))
			if !sleep(ctx, 5*time.Millisecond) {
				return nil, ctx.Err()
			}
		}
		return "done", nil
	}))
	return reg
}

// startWorker runs a worker of flows on b until the returned function is
// called. A finish hook records when each task's end was recorded.
func (r *run) startWorker(b *redisbackend.Backend, reg *registry.Registry) (stop func()) {
	w := queue.NewWorker(b, nil, queue.WorkerConfig{
		Registry: reg, Concurrency: 32, Lease: 3 * time.Second, Logger: r.opts.Logger,
		Backoff: func(int) time.Duration { return 100 * time.Millisecond },
		OnFinish: []queue.FinishHook{func(_ context.Context, f queue.Finished) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if _, ok := r.ended[f.Task.ID]; !ok {
				r.ended[f.Task.ID] = time.Now()
			}
			return nil
		}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// acceptingAgain reports whether a task enqueued after the kill was
// accepted.
func (r *run) acceptingAgain() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range slices.Backward(r.accepted) {
		if !a.called.Before(r.killedAt) {
			return true
		}
	}
	return false
}

// produce enqueues tasks at the run's rate until ctx ends, each from a
// goroutine of its own, and records which were accepted.
func (r *run) produce(ctx context.Context, broker *queue.Broker) {
	period := time.Second / time.Duration(r.opts.Rate)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	start := time.Now()
	for k := 0; ; k++ {
		if !sleep(ctx, time.Until(start.Add(time.Duration(k)*period))) {
			return
		}
		inflight.Go(func() {
			called := time.Now()
			opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			id, err := broker.Enqueue(opCtx, stepsFlow, nil, queue.EnqueueOptions{})
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil {
				r.refused++
				return
			}
			r.accepted = append(r.accepted, acceptedTask{id, called, time.Now()})
		})
	}
}

// settle waits until every accepted task has ended, or opts.Settle
// passes, and returns those that have not: their records are gone (which
// is known at once: nothing brings them back), or they never reached a
// terminal state. It also counts the tasks with more than one terminal
// event.
func (r *run) settle(ctx context.Context, b *redisbackend.Backend) []string {
	r.mu.Lock()
	pending := make([]string, len(r.accepted))
	for i, a := range r.accepted {
		pending[i] = a.id
	}
	r.mu.Unlock()
	var lost []string
	deadline := time.Now().Add(r.opts.Settle)
	for len(pending) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		var rest []string
		for _, id := range pending {
			snap, _, err := b.Snapshot(ctx, id)
			switch {
			case errors.Is(err, progress.ErrNotFound):
				lost = append(lost, id)
			case err != nil || !snap.State.Terminal():
				rest = append(rest, id)
			}
		}
		pending = rest
		if len(pending) > 0 {
			sleep(ctx, 100*time.Millisecond)
		}
	}
	lost = append(lost, pending...)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.accepted {
		if slices.Contains(lost, a.id) {
			continue
		}
		events, err := b.Events(ctx, a.id, "")
		if err != nil {
			continue
		}
		terminal := 0
		for _, e := range events {
			if e.Terminal() {
				terminal++
			}
		}
		if terminal > 1 {
			r.doubleEnded++
		}
	}
	return lost
}

// recovery returns the time from the kill until the first task enqueued
// after it was accepted (its Enqueue returned), and until the first of
// those ended (0 if none). r.mu is held.
func (r *run) recovery() (accepting, finishing time.Duration) {
	var firstAccepted, firstEnded time.Time
	for _, a := range r.accepted {
		if a.called.Before(r.killedAt) {
			continue
		}
		if firstAccepted.IsZero() || a.returned.Before(firstAccepted) {
			firstAccepted = a.returned
		}
		if end, ok := r.ended[a.id]; ok && (firstEnded.IsZero() || end.Before(firstEnded)) {
			firstEnded = end
		}
	}
	if !firstAccepted.IsZero() {
		accepting = firstAccepted.Sub(r.killedAt)
	}
	if !firstEnded.IsZero() {
		finishing = firstEnded.Sub(r.killedAt)
	}
	return accepting, finishing
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
