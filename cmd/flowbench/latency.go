package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// Default rates of the latency scenarios.
const (
	defaultPickupRate = 200
	defaultEventRate  = 1000
)

// warmups is how many tasks run before a latency run is measured, so
// that scripts are loaded and connections open.
const warmups = 20

// latencies collects durations from many goroutines.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	want int
	done chan struct{}
}

func newLatencies(want int) *latencies {
	return &latencies{d: make([]time.Duration, 0, want), want: want, done: make(chan struct{})}
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = append(l.d, d)
	if len(l.d) == l.want {
		close(l.done)
	}
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

func benchPickup(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	rate := cfg.Rate
	if rate == 0 {
		rate = defaultPickupRate
	}
	par := params("rate", rate, "duration", cfg.Duration, "concurrency", cfg.Concurrency, "backend", cfg.Backend)
	return latencyRuns(p, "pickup", cfg.Runs, par, func() (time.Duration, time.Duration, error) {
		return pickupOnce(ctx, e, p, rate)
	})
}

// latencyRuns calls once runs times and prints the median and spread of
// the p50 and p99 latencies it returns as the figures of scenario.
func latencyRuns(p *printer, scenario string, runs int, par string, once func() (p50, p99 time.Duration, err error)) error {
	var p50, p99 []float64
	for i := range runs {
		a, b, err := once()
		if err != nil {
			return err
		}
		p.note("%s run %d: p50 %.3f ms, p99 %.3f ms", scenario, i+1, ms(a), ms(b))
		p50, p99 = append(p50, ms(a)), append(p99, ms(b))
	}
	p.figure(scenario, "p50 ms", p50, par)
	p.figure(scenario, "p99 ms", p99, par)
	return nil
}

// pickupOnce enqueues tasks at a steady rate and measures, for each, the
// time from just before Broker.Enqueue to the start of its flow. With -v
// it notes how long the Enqueue calls took (-enqueue-delay lengthens
// them).
func pickupOnce(ctx context.Context, e *env, p *printer, rate int) (p50, p99 time.Duration, err error) {
	cfg := e.cfg
	st, err := e.newStack(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer st.close()
	total := max(1, int(float64(rate)*cfg.Duration.Seconds()))
	base := time.Now()
	sent := make([]atomic.Int64, total)
	lat := newLatencies(total)
	calls := newLatencies(total)
	warm := newLatencies(warmups)
	reg := registry.New()
	reg.MustRegister("pickup", flow.Func(func(_ context.Context, t *flow.Task) (any, error) {
		now := time.Since(base)
		var in struct {
			I int `json:"i"`
		}
		if err := json.Unmarshal(t.Inputs, &in); err != nil {
			return nil, err
		}
		switch {
		case in.I < 0:
			warm.add(0)
		case t.Attempt == 1 && in.I < total:
			lat.add(now - time.Duration(sent[in.I].Load()))
		}
		return nil, nil
	}))
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg})
	stop := startWorker(st.queue, st.store, nil, reg, cfg.Concurrency, providers{})
	defer stop()

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	for range warmups {
		if _, err := broker.Enqueue(ctx, "pickup", json.RawMessage(`{"i":-1}`), queue.EnqueueOptions{}); err != nil {
			return 0, 0, fmt.Errorf("enqueue: %w", err)
		}
	}
	if err := wait(ctx, warm.done, "warm-up tasks"); err != nil {
		return 0, 0, err
	}

	period := time.Second / time.Duration(rate)
	start := time.Now()
	errs := make(chan error, 1)
	for k := range total {
		if d := time.Until(start.Add(time.Duration(k) * period)); d > 0 {
			time.Sleep(d)
		}
		go func() {
			at := time.Since(base)
			sent[k].Store(int64(at))
			inputs := json.RawMessage(`{"i":` + strconv.Itoa(k) + `}`)
			if _, err := broker.Enqueue(ctx, "pickup", inputs, queue.EnqueueOptions{}); err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			calls.add(time.Since(base) - at)
		}()
	}
	select {
	case <-lat.done:
	case err := <-errs:
		return 0, 0, fmt.Errorf("enqueue: %w", err)
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("%d of %d tasks started: %w", lat.count(), total, errTimeout)
	}
	if err := wait(ctx, calls.done, "enqueue calls"); err != nil {
		return 0, 0, err
	}
	p.note("pickup: Broker.Enqueue took p50 %.3f ms, p99 %.3f ms", ms(percentile(calls.d, 0.50)), ms(percentile(calls.d, 0.99)))
	return percentile(lat.d, 0.50), percentile(lat.d, 0.99), nil
}

func wait(ctx context.Context, done <-chan struct{}, what string) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, errTimeout)
	}
}

func benchEvent(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	rate := cfg.Rate
	if rate == 0 {
		rate = defaultEventRate
	}
	par := params("rate", rate, "duration", cfg.Duration, "backend", cfg.Backend)
	return latencyRuns(p, "event", cfg.Runs, par, func() (time.Duration, time.Duration, error) {
		return eventOnce(ctx, e, rate)
	})
}

// server serves h on a loopback port until close is called.
type server struct {
	url   string
	close func()
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = hs.Serve(ln) })
	return &server{
		url: "http://" + ln.Addr().String(),
		close: func() {
			_ = hs.Close()
			wg.Wait()
		},
	}, nil
}

// eventOnce runs one task whose flow reports status events at a steady
// rate, watched by one SSE client over HTTP, and measures for each event
// the time from just before the flow reports it to its arrival at the
// client.
func eventOnce(ctx context.Context, e *env, rate int) (p50, p99 time.Duration, err error) {
	cfg := e.cfg
	st, err := e.newStack(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer st.close()
	total := max(1, int(float64(rate)*cfg.Duration.Seconds()))
	period := time.Second / time.Duration(rate)
	base := time.Now()
	sent := make([]atomic.Int64, total+1)
	release := make(chan struct{})
	reg := registry.New()
	reg.MustRegister("ticker", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		start := time.Now()
		for k := 1; k <= total; k++ {
			if d := time.Until(start.Add(time.Duration(k-1) * period)); d > 0 {
				time.Sleep(d)
			}
			sent[k].Store(int64(time.Since(base)))
			t.Progress.Status(strconv.Itoa(k))
		}
		return nil, nil
	}))
	reg.MustRegister("warm", noopFlow(3))
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg})
	h := ssehttp.New(ssehttp.Config{Queue: broker, Progress: st.store, Registry: reg, Logger: discard})
	srv, err := serve(h)
	if err != nil {
		return 0, 0, err
	}
	defer srv.close()
	stop := startWorker(st.queue, st.store, nil, reg, cfg.Concurrency, providers{})
	defer stop()

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	if err := warmUpStream(ctx, broker, client, srv.url); err != nil {
		return 0, 0, err
	}

	id, err := broker.Enqueue(ctx, "ticker", nil, queue.EnqueueOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("enqueue: %w", err)
	}
	sse, body, err := watch(ctx, client, srv.url, id)
	if err != nil {
		return 0, 0, err
	}
	defer body.Close()
	lat := make([]time.Duration, 0, total)
	released, prev := false, 0
	for {
		m, err := sse.next()
		now := time.Since(base)
		if err != nil {
			return 0, 0, fmt.Errorf("event stream ended after %d of %d events: %w", prev, total, err)
		}
		if !released {
			close(release)
			released = true
		}
		snap, err := m.snapshot()
		if err != nil {
			return 0, 0, fmt.Errorf("snapshot: %w", err)
		}
		if snap.State == string(progress.StateSuccess) {
			break
		}
		if snap.State == string(progress.StateFailure) {
			return 0, 0, fmt.Errorf("task failed: %s", snap.Details.Status)
		}
		k, err := strconv.Atoi(snap.Details.Status)
		if err != nil {
			continue // the PENDING or "Running" snapshot
		}
		if k != prev+1 {
			return 0, 0, fmt.Errorf("event %d arrived after event %d", k, prev)
		}
		prev = k
		lat = append(lat, now-time.Duration(sent[k].Load()))
	}
	if prev != total {
		return 0, 0, fmt.Errorf("stream ended after %d of %d events", prev, total)
	}
	return percentile(lat, 0.50), percentile(lat, 0.99), nil
}

// warmUpStream runs a few tasks of the "warm" flow and watches each to its
// end over SSE, so that the server, the store's subscriptions and the
// scripts are warm before anything is measured.
func warmUpStream(ctx context.Context, broker *queue.Broker, client *http.Client, base string) error {
	for range 5 {
		id, err := broker.Enqueue(ctx, "warm", nil, queue.EnqueueOptions{})
		if err != nil {
			return fmt.Errorf("enqueue warm-up: %w", err)
		}
		sse, body, err := watch(ctx, client, base, id)
		if err != nil {
			return fmt.Errorf("watch warm-up: %w", err)
		}
		for {
			_, err := sse.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				body.Close()
				return fmt.Errorf("watch warm-up: %w", err)
			}
		}
		body.Close()
	}
	return nil
}
