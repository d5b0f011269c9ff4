package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

func benchStartTask(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	var rates []float64
	for i := range cfg.Runs {
		r, err := startTaskOnce(ctx, e)
		if err != nil {
			return err
		}
		p.note("starttask run %d: %.0f req/s", i+1, r)
		rates = append(rates, r)
	}
	p.figure("starttask", "req/s", rates, params("conns", cfg.Conns, "duration", cfg.Duration, "backend", cfg.Backend))
	return nil
}

// startTaskOnce sends POST /start-task/ from cfg.Conns keep-alive
// connections for cfg.Duration, with no worker running, and returns the
// successful requests per second.
func startTaskOnce(ctx context.Context, e *env) (float64, error) {
	cfg := e.cfg
	st, err := e.newStack(ctx)
	if err != nil {
		return 0, err
	}
	defer st.close()
	reg := registry.New()
	reg.MustRegister("noop", noopFlow(cfg.Events))
	broker := queue.NewBroker(st.queue, st.store, queue.BrokerConfig{Registry: reg})
	srv, err := serve(ssehttp.New(ssehttp.Config{Queue: broker, Progress: st.store, Registry: reg, Logger: discard}))
	if err != nil {
		return 0, err
	}
	defer srv.close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Conns, DisableCompression: true}}
	defer client.CloseIdleConnections()

	post := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.url+"/start-task/", strings.NewReader(`{"flow":"noop","inputs":{}}`))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("start-task: status %d", resp.StatusCode)
		}
		return nil
	}
	// Warm up: open the connections and load the scripts.
	if err := forEach(cfg.Conns, cfg.Conns, func(int) error { return post(ctx) }); err != nil {
		return 0, err
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var ok atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Conns {
		wg.Go(func() {
			for runCtx.Err() == nil {
				if err := post(runCtx); err != nil {
					if runCtx.Err() == nil {
						once.Do(func() { first = err })
					}
					return
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return 0, first
	}
	return float64(ok.Load()) / elapsed.Seconds(), nil
}
