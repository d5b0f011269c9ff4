package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// defaultShutdownTimeout bounds the HTTP server's graceful shutdown.
const defaultShutdownTimeout = 10 * time.Second

// config is everything the server can be told.
type config struct {
	// Addr is the address to listen on.
	Addr string
	// Workers is how many flows the in-process workers run at once.
	Workers int
	// RedisURL selects the Redis backend when set. Not supported yet: see
	// backends.
	RedisURL string
	// Flows sets the pace of the example flows.
	Flows exampleflows.Config
	// ShutdownTimeout bounds the HTTP server's graceful shutdown. Zero
	// means defaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Grace is how long running flows may finish on shutdown before they
	// are interrupted (queue.WorkerConfig.ShutdownGrace).
	Grace time.Duration
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
}

// parseConfig reads the flags in args, taking their defaults from the
// environment through getenv: ADDR, else ":"+PORT, else ":8080" for -addr;
// REDIS_URL for the backend.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	cfg := config{ShutdownTimeout: defaultShutdownTimeout, RedisURL: getenv("REDIS_URL")}
	addr := ":8080"
	if port := getenv("PORT"); port != "" {
		addr = ":" + port
	}
	if a := getenv("ADDR"); a != "" {
		addr = a
	}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Addr, "addr", addr, "listen address (env ADDR, or PORT)")
	fs.IntVar(&cfg.Workers, "workers", 8, "number of flows the in-process workers run at once")
	fs.DurationVar(&cfg.Grace, "grace", 10*time.Second, "how long running flows may finish on shutdown")
	fs.DurationVar(&cfg.Flows.StepDelay, "step-delay", exampleflows.DefaultStepDelay, "pause of each step of the example flows")
	fs.DurationVar(&cfg.Flows.TokenDelay, "token-delay", exampleflows.DefaultTokenDelay, "pause between streamed tokens of the example flows")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Workers < 1 {
		return config{}, fmt.Errorf("-workers must be at least 1, got %d", cfg.Workers)
	}
	return cfg, nil
}

// backends returns the queue backend and the progress store the server
// runs on: in memory, for one process.
//
// This is the seam for Redis: when REDIS_URL is set, the Redis engine will
// build both from one rueidis client here. Until it exists, a set
// REDIS_URL is an error rather than a silent fallback to memory.
func backends(cfg config) (queue.Backend, *progress.MemoryStore, error) {
	if cfg.RedisURL != "" {
		return nil, nil, errors.New("REDIS_URL is set, but this build has no Redis backend yet; unset it to run in memory")
	}
	return queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}), nil
}

// newServer wires the server: the example flows in a registry, the
// backend, the API handler and the demo page. It returns the HTTP handler
// and run, which runs the workers until ctx ends and then stops them
// gracefully.
func newServer(cfg config) (http.Handler, func(ctx context.Context) error, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	reg := registry.New()
	if err := exampleflows.RegisterWith(reg, cfg.Flows); err != nil {
		return nil, nil, err
	}
	backend, store, err := backends(cfg)
	if err != nil {
		return nil, nil, err
	}
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry:      reg,
		Concurrency:   cfg.Workers,
		ShutdownGrace: cfg.Grace,
		Logger:        logger,
	})
	api := ssehttp.New(ssehttp.Config{
		Queue:    broker,
		Progress: store,
		Registry: reg,
		Logger:   logger,
	})

	mux := http.NewServeMux()
	mux.Handle("/", api)
	mountPage(mux)

	return mux, worker.Run, nil
}

// serve runs the server on ln until ctx ends, then shuts it down: the HTTP
// server first (live event streams are closed, so browsers reconnect later
// and resume), then the workers.
func serve(ctx context.Context, cfg config, ln net.Listener) error {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	handler, run, err := newServer(cfg)
	if err != nil {
		return err
	}

	// Requests' contexts derive from base, which is cancelled when the
	// shutdown starts, so that streams, which never go idle, end too.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(cancelBase)

	workerCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	workersDone := make(chan error, 1)
	go func() { workersDone <- run(workerCtx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("flows demo server listening", "url", pageURL(ln.Addr()), "workers", cfg.Workers)

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-served:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-workersDone:
		workersDone <- nil
		runErr = errors.Join(errors.New("workers stopped before the server"), err)
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("http shutdown: %w", err))
	}
	stopWorkers()
	if err := <-workersDone; err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("workers: %w", err))
	}
	logger.Info("stopped")
	return runErr
}

// pageURL is the address of the demo page on addr, for the log: a wildcard
// host is shown as localhost.
func pageURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}
