// Command flowbench measures how fast flows runs tasks and delivers their
// progress, on the machine it runs on, and prints one line per figure with
// the median and the spread (min..max) over several runs.
//
// It starts its own throwaway redis-server on a free loopback port (or
// uses the Redis at REDIS_URL, or no Redis at all with -backend memory)
// and runs, in one process, everything a deployment splits across
// machines: the load generator, the worker, the HTTP/SSE server and, for
// the SSE capacity scenario, a child process holding the browsers'
// connections. All traffic stays on the loopback interface.
//
// With -replica the throwaway redis-server gets a replica, and with
// -wait-replicas 1 the benchmarked backend runs in durable mode (WAIT for
// the replica on enqueue and on the end of each task): together they
// measure what durable mode costs.
//
// With -cluster it starts a throwaway Redis Cluster of -masters masters
// (three by default) instead, and the throughput and rate scenarios add
// each master's share of the Redis CPU and of the commands: how the load
// splits across the shards. The Redis CPU and commands per task are those
// of every master together (a cluster at REDIS_URL is measured the same
// way).
//
// Usage:
//
//	go run ./cmd/flowbench [flags]
//	go run ./cmd/flowbench -quick                  # a few seconds, tiny N
//	go run ./cmd/flowbench -scenario throughput,pickup -runs 3
//	go run ./cmd/flowbench -cluster -scenario throughput,roundtrips,rate
//
// Scenarios (-scenario, a comma-separated list, or "all"):
//
//	throughput  -n tasks of a no-op flow reporting 5 progress events each,
//	            enqueued as fast as possible and run by one worker with
//	            -concurrency slots (and -hooks no-op finish hooks; with
//	            -notify, a notification per task through notify's finish
//	            hook, delivered by the same worker to a channel that does
//	            nothing); tasks/s from the first enqueue to the last
//	            terminal state; -otel none,metrics,sampled,sdk alternates
//	            runs without and with the OpenTelemetry SDK, for what
//	            tracing and metrics cost (sampled: a share -otel-ratio of
//	            the traces, 0.01 unless told); -steps N adds N durable steps
//	            (flow.Step, 1 KB output each) to the flow, for what a
//	            checkpoint costs
//	roundtrips  the Redis traffic of the throughput runs, per task: client
//	            calls (each Do or DoMulti waits for one reply), socket
//	            writes (what auto-pipelining actually sends), and commands
//	            executed (INFO commandstats, script internals included)
//	rate        the tasks of throughput, enqueued at a steady -rate (default
//	            200/s) for -duration, so that the worker waits between
//	            tasks: Redis commands, client calls, and Redis and process
//	            CPU per task
//	pickup      enqueue -> flow start, tasks enqueued at a steady -rate
//	            (default 200/s) for -duration; p50 and p99
//	event       progress event reported in a flow -> received by an SSE
//	            client over HTTP, at -rate (default 1000/s) for -duration;
//	            p50 and p99
//	sse         -clients concurrent SSE streams on one server, each watching
//	            its own live task; every event must arrive in order; server
//	            RSS per stream and the server's Redis connections
//	starttask   POST /start-task/ requests per second from -conns
//	            keep-alive connections for -duration (no worker running)
//	failover    on a Redis Sentinel setup of its own (one primary, one
//	            replica, three sentinels), tasks enqueued at -rate while
//	            the primary is killed with SIGKILL, its replica cut off
//	            for -link-down before; once without and once with durable
//	            mode (WaitReplicas 1): tasks accepted, refused, lost and run
//	            twice, and the seconds until the sentinels promote the
//	            replica and until tasks are accepted and finished again
//
// Timings never fail the command: it exits non-zero only when a scenario
// goes wrong (a lost or reordered event, a failed task, an HTTP error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Scenario names, in the order they run.
var scenarioNames = []string{"throughput", "roundtrips", "rate", "pickup", "event", "sse", "starttask", "failover"}

// config is what the flags say.
type config struct {
	Scenarios    []string
	Backend      string // "redis" or "memory"
	RedisURL     string
	Cluster      bool          // start a Redis Cluster instead of one redis-server
	Masters      int           // its masters
	Replica      bool          // start a replica of the redis-server too
	WaitReplicas int           // redisbackend.Config.WaitReplicas of the benchmarked backend
	FetchDelay   time.Duration // redisbackend.Config.FetchDelay of the benchmarked backend
	EnqueueDelay time.Duration // redisbackend.Config.EnqueueDelay of the benchmarked backend
	AckDelay     time.Duration // redisbackend.Config.AckDelay of the benchmarked backend
	LinkDown     time.Duration // failover: how long the replica is cut off before the kill
	Runs         int
	N            int
	Concurrency  int
	Workers      int      // workers of the rate scenario
	Events       int      // progress events per task
	Steps        int      // flow.Step calls per task (throughput)
	Hooks        int      // no-op finish hooks of the throughput worker
	Notify       bool     // a notification per throughput task (package notify)
	OTel         []string // OpenTelemetry modes of the throughput runs, in turn
	OTelRatio    float64  // share of the traces sampled in the otel mode sampled
	Producers    int
	Clients      int
	Conns        int
	Rate         int // 0: the scenario's default
	Duration     time.Duration
	Quick        bool
	Verbose      bool
	CPUProfile   string
	MemProfile   string
	FlushDelay   time.Duration // rueidis ClientOption.MaxFlushDelay
	Multiplex    int           // rueidis ClientOption.PipelineMultiplex
	NoAutoPipe   bool          // rueidis ClientOption.DisableAutoPipelining
}

// Defaults of the full run, and of -quick for the flags not set.
var (
	fullDefaults  = config{Runs: 5, N: 50000, Clients: 10000, Duration: 10 * time.Second}
	quickDefaults = config{Runs: 1, N: 200, Clients: 20, Duration: 300 * time.Millisecond}
)

func parseConfig(args []string, getenv func(string) string) (config, error) {
	var cfg config
	var scenarios string
	fs := flag.NewFlagSet("flowbench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&scenarios, "scenario", "all", "scenarios to run: all, or a comma-separated list of "+strings.Join(scenarioNames, ", "))
	fs.StringVar(&cfg.Backend, "backend", "redis", "redis or memory")
	fs.StringVar(&cfg.RedisURL, "redis-url", getenv("REDIS_URL"), "Redis to use instead of a throwaway redis-server (env REDIS_URL); keys get a fresh prefix")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "start a throwaway Redis Cluster of -masters masters instead of one redis-server, and report how the load splits across them")
	fs.IntVar(&cfg.Masters, "masters", 3, "masters of the -cluster cluster")
	fs.BoolVar(&cfg.Replica, "replica", false, "start a replica of the throwaway redis-server, as a primary with a replica runs")
	fs.IntVar(&cfg.WaitReplicas, "wait-replicas", 0, "durable mode: redisbackend.Config.WaitReplicas of the benchmarked backend (implies -replica)")
	fs.DurationVar(&cfg.FetchDelay, "fetch-delay", 0, "redisbackend.Config.FetchDelay of the benchmarked backend: how long a worker that found the queue empty lets tasks gather")
	fs.DurationVar(&cfg.EnqueueDelay, "enqueue-delay", 0, "redisbackend.Config.EnqueueDelay of the benchmarked backend: how long an enqueue that would go alone waits for others to share its script")
	fs.DurationVar(&cfg.AckDelay, "ack-delay", 0, "redisbackend.Config.AckDelay of the benchmarked backend: how long a task's end that would go alone waits for others to share its script")
	fs.DurationVar(&cfg.LinkDown, "link-down", 300*time.Millisecond, "failover: how long the replica is cut off (stopped, its link dropped) before the primary is killed; 0 for none")
	fs.IntVar(&cfg.Runs, "runs", fullDefaults.Runs, "runs of each scenario")
	fs.IntVar(&cfg.N, "n", fullDefaults.N, "tasks of the throughput scenario")
	fs.IntVar(&cfg.Concurrency, "concurrency", 256, "flows the worker runs at once")
	fs.IntVar(&cfg.Workers, "workers", 1, "workers of the rate scenario, each with -concurrency slots, on one queue, as several worker processes run")
	fs.IntVar(&cfg.Events, "events", 5, "progress events per task (throughput) and per stream (sse)")
	fs.IntVar(&cfg.Steps, "steps", 0, "durable steps per task of the throughput flow (flow.Step, 1 KB output each), to measure what a checkpoint costs")
	fs.IntVar(&cfg.Hooks, "hooks", 0, "no-op finish hooks (queue.WorkerConfig.OnFinish) of the throughput worker, to measure what hooks cost")
	otelFlag := fs.String("otel", otelNone, "OpenTelemetry of the throughput runs: none (nothing installed), metrics (the SDK's meter provider, aggregating in memory, without exemplars unless OTEL_METRICS_EXEMPLAR_FILTER says otherwise), sampled (metrics, and a share -otel-ratio of the traces sampled and dropped), sdk (metrics, and every span sampled and dropped), or several, as none,sdk: each run of each mode in turn")
	fs.Float64Var(&cfg.OTelRatio, "otel-ratio", 0.01, "share of the traces sampled in -otel sampled (ParentBased(TraceIDRatioBased)), 0 to 1")
	fs.BoolVar(&cfg.Notify, "notify", false, "throughput: a notification per task (notify's finish hook and delivery flow, to a channel that does nothing), to measure what notifications cost; per-task figures include the notification")
	fs.IntVar(&cfg.Producers, "producers", 64, "goroutines that enqueue (throughput) or append events (sse)")
	fs.IntVar(&cfg.Clients, "clients", fullDefaults.Clients, "concurrent SSE streams of the sse scenario")
	fs.IntVar(&cfg.Conns, "conns", 32, "concurrent keep-alive connections of the starttask scenario")
	fs.IntVar(&cfg.Rate, "rate", 0, "tasks/s (rate, pickup) or events/s (event); 0 means 200 and 1000")
	fs.DurationVar(&cfg.Duration, "duration", fullDefaults.Duration, "length of the rate, pickup, event and starttask runs")
	fs.BoolVar(&cfg.Quick, "quick", false, "tiny runs for a smoke test: -runs 1 -n 200 -clients 20 -duration 300ms unless set")
	fs.BoolVar(&cfg.Verbose, "v", false, "print every run's figures and the command breakdown")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write a heap profile of the sse server, its streams open, to this file")
	fs.DurationVar(&cfg.FlushDelay, "flush-delay", 0, "rueidis MaxFlushDelay of the benchmarked client")
	fs.BoolVar(&cfg.NoAutoPipe, "no-autopipelining", false, "rueidis DisableAutoPipelining of the benchmarked client: a pooled connection per request")
	fs.IntVar(&cfg.Multiplex, "multiplex", 0, "rueidis PipelineMultiplex of the benchmarked client (0: its default)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var flags strings.Builder
			fs.SetOutput(&flags)
			fs.PrintDefaults()
			return config{}, helpError{flags: flags.String()}
		}
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["runs"] {
			cfg.Runs = quickDefaults.Runs
		}
		if !set["n"] {
			cfg.N = quickDefaults.N
		}
		if !set["clients"] {
			cfg.Clients = quickDefaults.Clients
		}
		if !set["duration"] {
			cfg.Duration = quickDefaults.Duration
		}
	}
	if cfg.Backend != "redis" && cfg.Backend != "memory" {
		return config{}, fmt.Errorf("-backend must be redis or memory, got %q", cfg.Backend)
	}
	if cfg.WaitReplicas > 0 {
		cfg.Replica = true
	}
	if (cfg.Replica && (cfg.Cluster || cfg.RedisURL != "" || cfg.Backend != "redis")) || cfg.WaitReplicas < 0 || cfg.LinkDown < 0 {
		return config{}, errors.New("-replica and -wait-replicas start a primary and a replica of their own (not with -cluster, REDIS_URL or -backend memory); -wait-replicas and -link-down must not be negative")
	}
	if cfg.Cluster && (cfg.Backend != "redis" || cfg.RedisURL != "") {
		return config{}, errors.New("-cluster starts a cluster of its own: it takes neither -backend memory nor REDIS_URL (a cluster at REDIS_URL is found by itself)")
	}
	for name, v := range map[string]int{"masters": cfg.Masters, "runs": cfg.Runs, "n": cfg.N, "concurrency": cfg.Concurrency, "producers": cfg.Producers, "clients": cfg.Clients, "conns": cfg.Conns, "workers": cfg.Workers} {
		if v < 1 {
			return config{}, fmt.Errorf("-%s must be at least 1, got %d", name, v)
		}
	}
	if cfg.Events < 0 || cfg.Rate < 0 || cfg.Duration <= 0 {
		return config{}, errors.New("-events and -rate must not be negative, -duration must be positive")
	}
	if cfg.Steps < 0 {
		return config{}, fmt.Errorf("-steps must not be negative, got %d", cfg.Steps)
	}
	if cfg.Hooks < 0 {
		return config{}, fmt.Errorf("-hooks must not be negative, got %d", cfg.Hooks)
	}
	modes, err := parseOTel(*otelFlag)
	if err != nil {
		return config{}, err
	}
	cfg.OTel = modes
	if cfg.OTelRatio < 0 || cfg.OTelRatio > 1 {
		return config{}, fmt.Errorf("-otel-ratio must be from 0 to 1, got %g", cfg.OTelRatio)
	}
	for s := range strings.SplitSeq(scenarios, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			cfg.Scenarios = append(cfg.Scenarios, scenarioNames...)
		case slices.Contains(scenarioNames, s):
			cfg.Scenarios = append(cfg.Scenarios, s)
		case s != "":
			return config{}, fmt.Errorf("unknown scenario %q (want all or %s)", s, strings.Join(scenarioNames, ", "))
		}
	}
	if len(cfg.Scenarios) == 0 {
		return config{}, errors.New("no scenario to run")
	}
	return cfg, nil
}

// wants reports whether the scenario was asked for.
func (c config) wants(s string) bool { return slices.Contains(c.Scenarios, s) }

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain(os.Stdin, os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs the command line args as main does and returns its exit
// code: 0 when the scenarios ran, or for -h, whose flags it prints to
// stderr (asked for, not a failure); 1 with the error on stderr
// otherwise.
func runMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := run(ctx, args, getenv, stdout)
	var help helpError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stderr, help.flags)
		return 0
	default:
		fmt.Fprintln(stderr, "flowbench:", err)
		return 1
	}
}

// helpError is parseConfig's answer to -h: flag.ErrHelp, with the flags
// to print.
type helpError struct{ flags string }

func (helpError) Error() string { return flag.ErrHelp.Error() }
func (helpError) Unwrap() error { return flag.ErrHelp }

// run parses args and runs the scenarios asked for, printing figures to
// out as they come.
func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	e, err := newEnv(ctx, cfg)
	if err != nil {
		return err
	}
	defer e.close()
	p := &printer{w: out, verbose: cfg.Verbose}
	p.header("flowbench %s; %s; GOMAXPROCS=%d, %d CPUs; runs=%d", time.Now().UTC().Format(time.DateTime+" UTC"),
		e.describe(), runtime.GOMAXPROCS(0), runtime.NumCPU(), cfg.Runs)

	if cfg.wants("throughput") || cfg.wants("roundtrips") {
		if err := benchThroughput(ctx, e, p); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	if cfg.wants("rate") {
		if err := benchRate(ctx, e, p); err != nil {
			return fmt.Errorf("rate: %w", err)
		}
	}
	if cfg.wants("pickup") {
		if err := benchPickup(ctx, e, p); err != nil {
			return fmt.Errorf("pickup: %w", err)
		}
	}
	if cfg.wants("event") {
		if err := benchEvent(ctx, e, p); err != nil {
			return fmt.Errorf("event: %w", err)
		}
	}
	if cfg.wants("sse") {
		if err := benchSSE(ctx, e, p); err != nil {
			return fmt.Errorf("sse: %w", err)
		}
	}
	if cfg.wants("starttask") {
		if err := benchStartTask(ctx, e, p); err != nil {
			return fmt.Errorf("starttask: %w", err)
		}
	}
	if cfg.wants("failover") && e.redis() {
		if err := benchFailover(ctx, e, p); err != nil {
			return fmt.Errorf("failover: %w", err)
		}
	}
	return nil
}
