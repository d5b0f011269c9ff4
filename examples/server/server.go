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
	"strings"
	"time"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/history"
	"github.com/flowsrun/flows/examples/internal/redisurl"
	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/examples/telemetry"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
	"github.com/flowsrun/flows/ssehttp/opspage"
)

// defaultShutdownTimeout bounds the HTTP server's graceful shutdown.
const defaultShutdownTimeout = 10 * time.Second

// Limits of the HTTP server: the size of a request's headers (a browser
// sends a few KiB, cookies included), and the kernel's send buffer of a
// connection (see ssehttp.LimitSendBuffer).
const (
	maxHeaderBytes  = 64 << 10
	sendBufferBytes = 64 << 10
)

// config is everything the server can be told.
type config struct {
	// Addr is the address to listen on.
	Addr string
	// Workers is how many flows the in-process workers run at once; 0
	// runs none (Redis only: separate worker processes run the flows).
	Workers int
	// RedisURL selects the Redis backend when set (REDIS_URL); empty
	// means in memory. See backends.
	RedisURL string
	// Queue is the Redis queue tasks are sent to and taken from.
	Queue string
	// Prefix starts every Redis key.
	Prefix string
	// WaitReplicas is the Redis backend's durable mode
	// (redisbackend.Config.WaitReplicas).
	WaitReplicas int
	// EnqueueDelay and AckDelay are how long a start, and the end of a
	// task run by the in-process workers, that would go to Redis alone
	// wait for others to share its script (redisbackend.Config's
	// EnqueueDelay and AckDelay).
	EnqueueDelay, AckDelay time.Duration
	// Flows sets the pace of the example flows.
	Flows exampleflows.Config
	// ShutdownTimeout bounds the HTTP server's graceful shutdown. Zero
	// means defaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Grace is how long running flows may finish on shutdown before they
	// are interrupted (queue.WorkerConfig.ShutdownGrace).
	Grace time.Duration
	// CORSOrigins are the origins of front ends elsewhere that may use
	// the API (ssehttp.CORS.AllowedOrigins).
	CORSOrigins []string
	// BodyTimeout is how long a client may take to send a request body
	// (ssehttp.Config.BodyTimeout); zero means the handler's default.
	BodyTimeout time.Duration
	// DatabaseURL, when set (DATABASE_URL), is the PostgreSQL the
	// in-process workers write the run history to (pghistory).
	DatabaseURL string
	// Telemetry says what OpenTelemetry exports: traces over OTLP/HTTP
	// when an OTEL_EXPORTER_OTLP_* endpoint is set (see
	// examples/telemetry).
	Telemetry telemetry.Options
	// Healthcheck asks a running server on Addr whether it answers,
	// instead of serving (the -healthcheck flag).
	Healthcheck bool
	// Notify are the notifications about finished tasks, from the
	// environment (see examples/notifications); none when empty.
	Notify notifications.Config
	// Limits are the limits per caller: in memory all off unless set, on
	// Redis generous defaults (redisDefaultLimits) unless set.
	Limits callerLimits
	// OpsRefresh is how often the operators' page at /ops/ reads the
	// stats, the listing and the dead letters; zero means
	// opspage.DefaultRefresh.
	OpsRefresh time.Duration
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
}

// parseConfig reads the flags in args, taking their defaults from the
// environment through getenv: ADDR, else ":"+PORT, else ":8080" for -addr;
// FLOWS_QUEUE and FLOWS_PREFIX for -queue and -prefix; FLOWS_CORS_ORIGINS
// for -cors-origins; REDIS_URL for the backend. Usage and flag errors are
// written to output.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	cfg := config{ShutdownTimeout: defaultShutdownTimeout, RedisURL: getenv("REDIS_URL"),
		DatabaseURL: getenv("DATABASE_URL"), Telemetry: telemetry.FromEnv("flows-server", getenv)}
	addr := ":8080"
	if port := getenv("PORT"); port != "" {
		addr = ":" + port
	}
	if a := getenv("ADDR"); a != "" {
		addr = a
	}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: server [flags]\n\nServes the demo page and the flows API; in memory unless REDIS_URL is set.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Addr, "addr", addr, "listen address (env ADDR, or PORT)")
	fs.IntVar(&cfg.Workers, "workers", 8, "number of flows the in-process workers run at once; 0 for none (needs REDIS_URL)")
	fs.StringVar(&cfg.Queue, "queue", cmp.Or(getenv("FLOWS_QUEUE"), redisbackend.DefaultQueue), "Redis queue of the tasks (env FLOWS_QUEUE)")
	fs.StringVar(&cfg.Prefix, "prefix", cmp.Or(getenv("FLOWS_PREFIX"), redisbackend.DefaultPrefix), "prefix of every Redis key (env FLOWS_PREFIX)")
	waitReplicas := fs.String("wait-replicas", cmp.Or(getenv("FLOWS_WAIT_REPLICAS"), "0"), "with Redis: durable mode, the replicas that must have a task before start-task accepts it (env FLOWS_WAIT_REPLICAS)")
	enqueueDelay := fs.String("enqueue-delay", cmp.Or(getenv("FLOWS_ENQUEUE_DELAY"), "0s"), "with Redis: how long a start that would go to Redis alone waits for others to share its script: less Redis work per task at low rates, for a start-task that answers up to that much later (env FLOWS_ENQUEUE_DELAY)")
	ackDelay := fs.String("ack-delay", cmp.Or(getenv("FLOWS_ACK_DELAY"), "0s"), "with Redis: how long the end of a task run by the in-process workers that would go to Redis alone waits for others to share its script (env FLOWS_ACK_DELAY)")
	fs.DurationVar(&cfg.Grace, "grace", 10*time.Second, "how long running flows may finish on shutdown")
	fs.DurationVar(&cfg.Flows.StepDelay, "step-delay", exampleflows.DefaultStepDelay, "pause of each step of the example flows")
	fs.DurationVar(&cfg.Flows.TokenDelay, "token-delay", exampleflows.DefaultTokenDelay, "pause between streamed tokens of the example flows")
	origins := fs.String("cors-origins", getenv("FLOWS_CORS_ORIGINS"), "comma-separated origins of front ends elsewhere that may use the API, as in https://app.example.com (env FLOWS_CORS_ORIGINS)")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", ssehttp.DefaultBodyTimeout, "how long a client may take to send a request body")
	fs.DurationVar(&cfg.OpsRefresh, "ops-refresh", opspage.DefaultRefresh, "how often the operators' page at /ops/ reads the stats and the listing")
	limits := callerLimitFlags(fs, getenv)
	fs.BoolVar(&cfg.Healthcheck, "healthcheck", false, "instead of serving, ask the server on -addr for GET /flows/ and exit 0 if it answers 200, else 1 (for container health checks)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	n, err := redisurl.WaitReplicas(*waitReplicas)
	if err != nil {
		return config{}, err
	}
	var defaults callerLimits
	if cfg.RedisURL != "" {
		defaults = redisDefaultLimits()
	}
	if cfg.Limits, err = limits(defaults); err != nil {
		return config{}, err
	}
	cfg.WaitReplicas = n
	if cfg.EnqueueDelay, err = redisurl.Delay("enqueue-delay", *enqueueDelay, "100ms"); err != nil {
		return config{}, err
	}
	if cfg.AckDelay, err = redisurl.Delay("ack-delay", *ackDelay, "10ms"); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case cfg.WaitReplicas > 0 && cfg.RedisURL == "":
		return config{}, errors.New("-wait-replicas needs REDIS_URL: in memory there are no replicas")
	case (cfg.EnqueueDelay > 0 || cfg.AckDelay > 0) && cfg.RedisURL == "":
		return config{}, errors.New("-enqueue-delay and -ack-delay need REDIS_URL: in memory nothing is batched")
	case cfg.OpsRefresh < opspage.MinRefresh:
		return config{}, fmt.Errorf("-ops-refresh %v: must be at least %v", cfg.OpsRefresh, opspage.MinRefresh)
	case cfg.Workers < 0:
		return config{}, fmt.Errorf("-workers must be 0 or more, got %d", cfg.Workers)
	case cfg.Grace <= 0:
		return config{}, fmt.Errorf("-grace must be positive, got %v", cfg.Grace)
	case cfg.BodyTimeout <= 0:
		return config{}, fmt.Errorf("-body-timeout must be positive, got %v", cfg.BodyTimeout)
	case cfg.Workers == 0 && cfg.RedisURL == "":
		return config{}, errors.New("-workers 0 needs REDIS_URL: in memory, no other process can run the tasks")
	case cfg.Queue == "" || strings.ContainsAny(cfg.Queue, "{}"):
		return config{}, fmt.Errorf("-queue %q: must be non-empty and without braces", cfg.Queue)
	case cfg.Prefix == "" || strings.ContainsAny(cfg.Prefix, "{}"):
		return config{}, fmt.Errorf("-prefix %q: must be non-empty and without braces", cfg.Prefix)
	}
	if cfg.RedisURL != "" {
		if _, err := redisurl.Options(cfg.RedisURL); err != nil {
			return config{}, err
		}
	}
	for o := range strings.SplitSeq(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.CORSOrigins = append(cfg.CORSOrigins, o)
		}
	}
	if err := (ssehttp.CORS{AllowedOrigins: cfg.CORSOrigins}).Validate(); err != nil {
		return config{}, fmt.Errorf("-cors-origins: %w", err)
	}
	if cfg.Notify, err = notifications.FromEnv(getenv); err != nil {
		return config{}, err
	}
	if _, err := cfg.Notify.Channels(slog.New(slog.DiscardHandler)); err != nil {
		return config{}, err // a bad URL, address or secret stops the server now
	}
	return cfg, nil
}

// backends returns the queue backend and the progress store the server
// runs on, and the func that releases them once the server and its
// workers have stopped. Without REDIS_URL both live in memory, for one
// process. With it, both are one redisbackend.Backend on one rueidis
// client, shared with any number of worker processes (examples/worker);
// the server fails to start if Redis cannot be reached.
func backends(cfg config) (queue.Backend, progress.Backend, func(), error) {
	if cfg.RedisURL == "" {
		return queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}), func() {}, nil
	}
	client, _, err := redisurl.Connect(cfg.RedisURL)
	if err != nil {
		return nil, nil, nil, err
	}
	backend, err := redisbackend.New(client, redisbackend.Config{Prefix: cfg.Prefix, Queue: cfg.Queue, WaitReplicas: cfg.WaitReplicas,
		EnqueueDelay: cfg.EnqueueDelay, AckDelay: cfg.AckDelay, Logger: cfg.Logger})
	if err != nil {
		client.Close()
		return nil, nil, nil, err
	}
	release := func() {
		_ = backend.Close() // before the client: it ends the pub/sub connection
		client.Close()
	}
	return backend, backend, release, nil
}

// newServer wires the server: the example flows in a registry, the
// backend, the API handler and the demo page. It returns the HTTP handler
// and run, which runs the workers until ctx ends, stops them gracefully and
// then releases the backend: call run, and stop using the handler before
// run returns.
func newServer(cfg config) (http.Handler, func(ctx context.Context) error, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	reg := registry.New()
	if err := exampleflows.RegisterWith(reg, cfg.Flows); err != nil {
		return nil, nil, err
	}
	// The operators' page reads the API at the root, where it is mounted
	// below.
	ops, err := opspage.New(opspage.Config{API: "/", Refresh: cfg.OpsRefresh})
	if err != nil {
		return nil, nil, err
	}
	for _, f := range reg.List() {
		logger.Info("flow registered", "flow", f.Name, "labels", f.Labels) // the model and search in use
	}
	cfg.Logger = logger
	tel, err := telemetry.Setup(context.Background(), cfg.Telemetry)
	if err != nil {
		return nil, nil, err
	}
	// The history is written by the workers (these in-process ones, or
	// the worker processes of examples/worker with -workers 0) and read
	// by the operators' listing once Redis has dropped a task.
	hist, err := history.Open(context.Background(), cfg.DatabaseURL, logger)
	if err != nil {
		_ = tel.Shutdown(context.Background())
		return nil, nil, err
	}
	hooks := hist.Hooks()
	backend, store, releaseBackend, err := backends(cfg)
	if err != nil {
		hist.Close()
		_ = tel.Shutdown(context.Background())
		return nil, nil, err
	}
	// release releases the backend, the history and the telemetry, whose
	// last spans and metrics it flushes.
	release := func() {
		releaseBackend()
		hist.Close()
		if err := tel.Shutdown(context.Background()); err != nil {
			logger.Warn("flushing the telemetry failed", "err", err)
		}
	}
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg, CallerLimits: cfg.Limits.Queue,
		TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider})
	notifier, err := notifications.New(cfg.Notify, broker, logger)
	if err != nil {
		release()
		return nil, nil, err
	}
	if notifier != nil {
		// The in-process workers deliver notifications and enqueue them
		// for the tasks they end; so must separate worker processes.
		if err := notifier.Register(reg); err != nil {
			release()
			return nil, nil, err
		}
		hooks = append(hooks, notifier.Hook())
		logger.Info("notifications on", "channels", notifier.Channels())
	}
	// run runs the in-process workers, if any, until ctx ends; then it
	// releases the backend, which the handler no longer uses by then.
	run := func(ctx context.Context) error {
		defer release()
		if cfg.Workers == 0 {
			<-ctx.Done()
			return nil
		}
		worker := queue.NewWorker(backend, store, queue.WorkerConfig{
			Registry:       reg,
			Concurrency:    cfg.Workers,
			ShutdownGrace:  cfg.Grace,
			OnFinish:       hooks,
			Logger:         logger,
			TracerProvider: tel.TracerProvider,
			MeterProvider:  tel.MeterProvider,
		})
		return worker.Run(ctx)
	}
	api := ssehttp.New(ssehttp.Config{
		Queue:       broker,
		Progress:    store,
		Registry:    reg,
		CORS:        ssehttp.CORS{AllowedOrigins: cfg.CORSOrigins},
		BodyTimeout: cfg.BodyTimeout,
		Inspector:   queue.NewInspector(backend, store, queue.InspectorConfig{History: hist.Lister(), Logger: logger}),
		Logger:      logger,
		// Limits per caller (-caller-starts...): in memory off unless
		// set, on Redis generous defaults.
		MaxStreamsPerCaller: cfg.Limits.MaxStreams,
		TrustedProxies:      cfg.Limits.TrustedProxies,
		// The start-task span and the open streams.
		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
	})
	if tel.Tracing {
		logger.Info("tracing: spans are exported over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT)")
	}
	// The demo has no users: everyone may use every task. A host that
	// exposes the API names its callers with Config.Identify.
	logger.Warn("the flows API is open: any caller may start, read, watch and cancel any task, and use the operators' routes; " +
		"set ssehttp.Config.Identify before exposing it (README: Exposing the API)")

	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle("GET /metrics", tel.Metrics)
	mux.Handle("GET /notifications/{id}/", notificationsHandler(broker, notifier, logger))
	mountPage(mux)
	mux.Handle("/ops/", http.StripPrefix("/ops", ops))

	return mux, run, nil
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
		Handler: handler,
		// Headers get 10 s and 64 KiB (Go's default is 1 MiB); bodies get
		// ssehttp.Config.BodyTimeout, set by the handler itself, since a
		// ReadTimeout here would bound every request, streams included.
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		// A client that stops reading a stream can make the kernel hold
		// 4 MiB for it unless the send buffer is limited.
		ConnContext: ssehttp.LimitSendBuffer(sendBufferBytes),
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(cancelBase)

	workerCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	workersDone := make(chan error, 1)
	go func() { workersDone <- run(workerCtx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("flows demo server listening", "url", pageURL(ln.Addr()), "ops", pageURL(ln.Addr())+"ops/", "backend", backendName(cfg), "workers", cfg.Workers)

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

// backendName names the backend of cfg for the log.
func backendName(cfg config) string {
	if cfg.RedisURL != "" {
		return "redis"
	}
	return "memory"
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
