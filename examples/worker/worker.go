package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/flowsrun/flows/examples/history"
	"github.com/flowsrun/flows/examples/internal/redisurl"
	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/examples/telemetry"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// config is everything the worker can be told.
type config struct {
	// RedisURL is where the queue and the progress store live (REDIS_URL).
	RedisURL string
	// Queue is the queue to take tasks from.
	Queue string
	// Prefix starts every Redis key.
	Prefix string
	// WaitReplicas is the backend's durable mode
	// (redisbackend.Config.WaitReplicas).
	WaitReplicas int
	// FetchDelay is how long the worker lets tasks gather when it found
	// the queue empty (redisbackend.Config.FetchDelay).
	FetchDelay time.Duration
	// AckDelay is how long a task's end that would go to Redis alone
	// waits for others to share its script (redisbackend.Config.AckDelay).
	AckDelay time.Duration
	// Concurrency is the most flows run at once.
	Concurrency int
	// Lease is how long a fetched task stays claimed without news from
	// the worker (queue.WorkerConfig.Lease).
	Lease time.Duration
	// Grace is how long running flows may finish on shutdown
	// (queue.WorkerConfig.ShutdownGrace).
	Grace time.Duration
	// Notify are the notifications about finished tasks, from the
	// environment (see examples/notifications); none when empty.
	Notify notifications.Config
	// DatabaseURL, when set (DATABASE_URL), is the PostgreSQL the worker
	// writes the run history to (pghistory).
	DatabaseURL string
	// MetricsAddr, when set, is the address of an HTTP server of the
	// worker's metrics at /metrics, in the Prometheus text format.
	MetricsAddr string
	// Telemetry says what OpenTelemetry exports: traces over OTLP/HTTP
	// when an OTEL_EXPORTER_OTLP_* endpoint is set (see
	// examples/telemetry).
	Telemetry telemetry.Options
	// Logger receives the worker's logs; nil means slog.Default().
	Logger *slog.Logger
}

// errNoRedisURL is the configuration error of a worker started without
// REDIS_URL.
var errNoRedisURL = errors.New("REDIS_URL is not set: the worker takes its tasks from Redis, e.g. REDIS_URL=redis://127.0.0.1:6379/0")

// parseConfig reads the flags in args, taking REDIS_URL and the defaults
// of -queue and -prefix (FLOWS_QUEUE, FLOWS_PREFIX) from the environment
// through getenv. Usage and flag errors are written to output.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	cfg := config{RedisURL: getenv("REDIS_URL"), DatabaseURL: getenv("DATABASE_URL"), Telemetry: telemetry.FromEnv("flows-worker", getenv)}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: REDIS_URL=redis://host:port/db worker [flags]\n\nRuns the example flows on tasks taken from Redis.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Concurrency, "concurrency", queue.DefaultConcurrency, "number of flows run at once")
	fs.StringVar(&cfg.Queue, "queue", cmp.Or(getenv("FLOWS_QUEUE"), redisbackend.DefaultQueue), "queue to take tasks from (env FLOWS_QUEUE)")
	fs.StringVar(&cfg.Prefix, "prefix", cmp.Or(getenv("FLOWS_PREFIX"), redisbackend.DefaultPrefix), "prefix of every Redis key (env FLOWS_PREFIX)")
	fs.DurationVar(&cfg.Lease, "lease", queue.DefaultLease, "how long a task stays claimed without news from this worker")
	fs.DurationVar(&cfg.Grace, "grace", queue.DefaultShutdownGrace, "on shutdown, how long running flows may finish before their tasks are handed back")
	waitReplicas := fs.String("wait-replicas", cmp.Or(getenv("FLOWS_WAIT_REPLICAS"), "0"), "durable mode: the replicas that must have a task's end before it is acknowledged (env FLOWS_WAIT_REPLICAS)")
	fetchDelay := fs.String("fetch-delay", cmp.Or(getenv("FLOWS_FETCH_DELAY"), "0s"), "how long the worker lets tasks gather when it found the queue empty: less Redis work per task at low rates, for up to that much more pickup latency (env FLOWS_FETCH_DELAY)")
	ackDelay := fs.String("ack-delay", cmp.Or(getenv("FLOWS_ACK_DELAY"), "0s"), "how long a task's end that would go to Redis alone waits for others to share its script: less Redis work per task at low rates, for a task's end recorded up to that much later (env FLOWS_ACK_DELAY)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "address to serve the worker's metrics on at /metrics (Prometheus text), as in :9090; empty for none")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	n, err := redisurl.WaitReplicas(*waitReplicas)
	if err != nil {
		return config{}, err
	}
	cfg.WaitReplicas = n
	if cfg.FetchDelay, err = redisurl.Delay("fetch-delay", *fetchDelay, "50ms"); err != nil {
		return config{}, err
	}
	if cfg.AckDelay, err = redisurl.Delay("ack-delay", *ackDelay, "10ms"); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case cfg.RedisURL == "":
		return config{}, errNoRedisURL
	case cfg.Concurrency < 1:
		return config{}, fmt.Errorf("-concurrency must be at least 1, got %d", cfg.Concurrency)
	case cfg.Lease <= 0:
		return config{}, fmt.Errorf("-lease must be positive, got %v", cfg.Lease)
	case cfg.Grace <= 0:
		return config{}, fmt.Errorf("-grace must be positive, got %v", cfg.Grace)
	case cfg.Queue == "" || strings.ContainsAny(cfg.Queue, "{}"):
		return config{}, fmt.Errorf("-queue %q: must be non-empty and without braces", cfg.Queue)
	case cfg.Prefix == "" || strings.ContainsAny(cfg.Prefix, "{}"):
		return config{}, fmt.Errorf("-prefix %q: must be non-empty and without braces", cfg.Prefix)
	}
	if _, err := redisurl.Options(cfg.RedisURL); err != nil {
		return config{}, err
	}
	if cfg.Notify, err = notifications.FromEnv(getenv); err != nil {
		return config{}, err
	}
	if _, err := cfg.Notify.Channels(slog.New(slog.DiscardHandler)); err != nil {
		return config{}, err // a bad URL, address or secret stops the worker now
	}
	return cfg, nil
}

// command is the whole program but for the process: it parses args, adds
// the flows of register to a new registry, and runs workers until one of
// signals arrives. It returns the exit status: 0 after a graceful
// shutdown, 2 for a bad configuration, 1 for any other error.
func command(args []string, getenv func(string) string, stderr io.Writer, register func(*registry.Registry) error, signals ...os.Signal) int {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		logger.Error("bad configuration", "err", err)
		return 2
	}
	cfg.Logger = logger
	reg := registry.New()
	if err := register(reg); err != nil {
		logger.Error("cannot register the flows", "err", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), signals...)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		<-ctx.Done()
		stop() // from now on, a signal has its default effect: it ends the process at once
		// A signal's cause says which signal, but also matches
		// context.Canceled with errors.Is: compare with ==.
		if cause := context.Cause(ctx); cause != context.Canceled {
			logger.Info("stopping: no new tasks; running flows may finish within the grace period; a second signal ends the worker at once",
				"cause", cause, "grace", cfg.Grace)
		}
	}()
	defer func() {
		stop()
		<-watching
	}()
	if err := run(ctx, cfg, reg); err != nil {
		logger.Error("worker stopped", "err", err)
		return 1
	}
	return 0
}

// run connects to Redis and runs a worker for the flows of reg until ctx
// ends, then shuts it down gracefully (queue.Worker.Run): it stops
// fetching, lets running flows finish within cfg.Grace and hands the other
// tasks back to the queue. It fails only if Redis cannot be reached at the
// start; later outages are waited out.
func run(ctx context.Context, cfg config, reg *registry.Registry) error {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	client, opt, err := redisurl.Connect(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer client.Close()
	backend, err := redisbackend.New(client, redisbackend.Config{Prefix: cfg.Prefix, Queue: cfg.Queue, WaitReplicas: cfg.WaitReplicas, FetchDelay: cfg.FetchDelay, AckDelay: cfg.AckDelay, Logger: logger})
	if err != nil {
		return err
	}
	defer backend.Close() // before the client: it ends the pub/sub connection

	logger.Info("flows worker: connected to Redis",
		"addr", strings.Join(opt.InitAddress, ","), "mode", client.Mode(), "db", opt.SelectDB,
		"queue", backend.Queue(), "prefix", backend.Prefix())
	for _, f := range reg.List() {
		logger.Info("flow registered", "flow", f.Name, "labels", f.Labels) // the model and search in use
	}
	tel, err := telemetry.Setup(ctx, cfg.Telemetry)
	if err != nil {
		return err
	}
	defer func() {
		if err := tel.Shutdown(context.WithoutCancel(ctx)); err != nil {
			logger.Warn("flushing the telemetry failed", "err", err)
		}
	}()
	if tel.Tracing {
		logger.Info("tracing: spans are exported over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT)")
	}
	hist, err := history.Open(ctx, cfg.DatabaseURL, logger)
	if err != nil {
		return err
	}
	defer hist.Close()
	hooks := hist.Hooks()
	if cfg.MetricsAddr != "" {
		stopMetrics, err := serveMetrics(cfg.MetricsAddr, tel, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	notifier, err := notifications.New(cfg.Notify, queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: reg}), logger)
	if err != nil {
		return err
	}
	if notifier != nil {
		// This worker delivers notifications, and enqueues them for the
		// tasks it ends.
		if err := notifier.Register(reg); err != nil {
			return err
		}
		hooks = append(hooks, notifier.Hook())
		logger.Info("notifications on", "channels", notifier.Channels())
	}
	w := queue.NewWorker(backend, nil, queue.WorkerConfig{ // nil: the backend is the store
		Registry:       reg,
		Concurrency:    cfg.Concurrency,
		Lease:          cfg.Lease,
		ShutdownGrace:  cfg.Grace,
		OnFinish:       hooks,
		Logger:         logger,
		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
	})
	return w.Run(ctx)
}

// serveMetrics serves the worker's metrics at /metrics on addr until the
// func it returns is called.
func serveMetrics(addr string, tel *telemetry.Telemetry, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", tel.Metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("metrics served", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { _ = srv.Close() }, nil
}
