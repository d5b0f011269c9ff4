// Command flows looks at and acts on the tasks of a flows queue in Redis:
// it lists them, shows one (and follows it live), counts them, cancels
// them, lists the dead letters and runs them again. It is the operator's
// tool beside the ops page and the HTTP API, on the same queue.Inspector.
//
// Usage:
//
//	flows [-redis URL] [-prefix P] [-queue Q] [-json] [-timeout D] <command> [flags] [args]
//
// Commands:
//
//	ls       [-state S] [-flow F] [-owner O] [-since T] [-until T]
//	         [-limit N] [-cursor C] [-all]
//	                           tasks, newest first (-all: every page);
//	                           -since and -until take an RFC 3339 time
//	                           or a duration ago (-since 24h)
//	show     [-follow] ID      one task: record, snapshot, steps, result;
//	                           -follow prints its events live until it ends
//	stats                      counts by state and flow, depth, workers,
//	                           the last minute's throughput and latency
//	cancel   ID...             ask tasks to stop
//	cancel   [-state S] [-flow F] [-owner O] [-since T] [-until T]
//	         [-limit N] [-cursor C]
//	                           ask every pending or running task the
//	                           filter selects (one flag at least, as ls
//	                           takes them) to stop, up to N a call; the
//	                           tasks asked before (still running) are
//	                           listed apart, not asked again; the
//	                           last line goes on where a call stopped
//	dead     [-limit N]        the dead-letter set, newest first
//	requeue  [-resume] ID...   run dead tasks again, as new tasks
//	                           (-resume: each replays the steps its
//	                           dead task completed, and runs the rest)
//
// The Redis URL comes from -redis or REDIS_URL (redis://host:6379/0; a
// URL with several addresses or a master_set names a Cluster or a
// Sentinel setup, as rueidis.ParseURL reads it, but with rediss:// the
// sentinels too are dialed over TLS, and sentinel_password and
// sentinel_username are theirs; its password and secret query values
// never appear in an error); -prefix and -queue (or FLOWS_PREFIX and
// FLOWS_QUEUE) name the keys, as the workers were given them; -timeout
// bounds each call to Redis (10s). The output is for people, with
// aligned columns and relative times; -json prints JSON for scripts
// instead: one document, and for show -follow that task's
// document followed by its events, one per line. A command's flags go
// before its task ids (requeue -resume ID): a flag after them is a usage
// error.
//
// Exit codes: 0 when the command did what it was asked; 1 when it could
// not (a task not found, not dead, Redis unreachable); 2 for a usage
// error; 3 for show -follow of a task that ended FAILURE.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/redisform"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitFailure = 3 // show -follow: the task ended FAILURE
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// usage is printed for -h and after a usage error.
const usage = `usage: flows [-redis URL] [-prefix P] [-queue Q] [-json] [-timeout D] <command> [flags] [args]

commands:
  ls       [-state S] [-flow F] [-owner O] [-since T] [-until T]
           [-limit N] [-cursor C] [-all]                        tasks, newest first
  show     [-follow] ID                                         one task (-follow: live)
  stats                                                         counts, depth, workers, last minute
  cancel   ID... | [-state S] [-flow F] [-owner O] [-since T] [-until T]
           [-limit N] [-cursor C]                               ask tasks to stop
  dead     [-limit N]                                           the dead-letter set
  requeue  [-resume] ID...                                      run dead tasks again
                                                               (-resume: replay their completed steps)

Redis comes from -redis or REDIS_URL; -timeout bounds each call to it
(default 10s). Exit codes: 0 done, 1 failed, 2 usage, 3 show -follow of
a task that ended FAILURE.
`

// usageError is an error in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// errHelp is returned by cli.parse for -h, -help or --help among a
// command's flags: answered with the usage, without Redis.
var errHelp = errors.New("help asked")

// errTaskFailed ends show -follow of a task that ended FAILURE.
var errTaskFailed = errors.New("the task ended FAILURE")

// cli is one run of the command: where it writes and what it reads.
type cli struct {
	out, errw io.Writer
	json      bool
	now       func() time.Time
	in        *queue.Inspector
	backend   *redisbackend.Backend
	// open connects to Redis and sets in, backend and release; parse
	// calls it once the command's flags are read.
	open    func() error
	release func()
	// global are the flags -prefix and -queue as given on the command
	// line (flag and value, in pairs), which the command lines it prints
	// for the next page repeat; -redis is left out, since its URL may
	// hold a password.
	global []string
}

// run runs the command line args and returns the exit code. getenv reads
// the environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	redisURL := fs.String("redis", getenv("REDIS_URL"), "Redis URL (env REDIS_URL)")
	prefix := fs.String("prefix", cmp.Or(getenv("FLOWS_PREFIX"), redisbackend.DefaultPrefix), "prefix of the keys (env FLOWS_PREFIX)")
	queueName := fs.String("queue", cmp.Or(getenv("FLOWS_QUEUE"), redisbackend.DefaultQueue), "queue (env FLOWS_QUEUE)")
	asJSON := fs.Bool("json", false, "print JSON, for scripts")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of each call to Redis")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "flows: %v\n\n%s", err, usage)
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "flows: unknown command %q\n\n%s", name, usage)
		return exitUsage
	}
	c := &cli{out: stdout, errw: stderr, json: *asJSON, now: time.Now}
	if !c.json {
		c.out = textWriter{stdout} // what tasks hold, as text
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "prefix" || f.Name == "queue" {
			c.global = append(c.global, f.Name, f.Value.String())
		}
	})
	c.open = func() error {
		if *redisURL == "" {
			return usagef("no Redis: set REDIS_URL or pass -redis redis://host:6379")
		}
		return c.connect(*redisURL, *prefix, *queueName, *timeout)
	}
	err := cmd(c, ctx, rest)
	if c.release != nil {
		c.release()
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "flows %s: %v\n", name, err)
		return exitUsage
	case errors.Is(err, errTaskFailed):
		return exitFailure
	default:
		fmt.Fprintf(stderr, "flows %s: %v\n", name, err)
		return exitFailed
	}
}

// commands are the subcommands by name.
var commands = map[string]func(c *cli, ctx context.Context, args []string) error{
	"ls":      (*cli).ls,
	"show":    (*cli).show,
	"stats":   (*cli).stats,
	"cancel":  (*cli).cancel,
	"dead":    (*cli).dead,
	"requeue": (*cli).requeue,
}

// connect opens the backend of the queue at redisURL and sets c.release
// to the function that closes it. Its errors keep the URL's credentials
// out (redact, redisform.ParseURL): the parser quotes the whole URL,
// password included, and what the command writes to stderr ends up in
// logs and issues.
func (c *cli) connect(redisURL, prefix, queueName string, timeout time.Duration) error {
	opt, err := redisform.ParseURL(redisURL)
	if err != nil {
		return usagef("Redis URL: %v", err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return fmt.Errorf("connect to Redis at %s: %w%s", strings.Join(opt.InitAddress, ","), redact.Error(err, redact.Secrets(redisURL)...), redisform.Hint(opt, err))
	}
	if err := redisform.Check(client, opt); err != nil {
		client.Close()
		return fmt.Errorf("connect to Redis at %s: %w", strings.Join(opt.InitAddress, ","), err)
	}
	logger := slog.New(slog.NewTextHandler(c.errw, &slog.HandlerOptions{Level: slog.LevelError}))
	b, err := redisbackend.New(client, redisbackend.Config{Prefix: prefix, Queue: queueName, OpTimeout: timeout, Logger: logger})
	if err != nil {
		client.Close()
		return usagef("%v", err)
	}
	c.backend = b
	c.in = queue.NewInspector(b, nil, queue.InspectorConfig{Logger: logger})
	c.release = func() {
		_ = b.Close()
		client.Close()
	}
	return nil
}

// flags returns a flag set for a subcommand's own flags.
func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args with fs, turning its errors into usage errors, and
// then connects to Redis (c.open): a command's flags are read before
// Redis is needed, so that -h, -help or --help among them returns
// errHelp without Redis, while a flag's value that reads "-h"
// (ls -owner -h) stays a value, as the flag package reads it.
//
// A flag of fs after the first argument is a usage error too, and -h
// there asks for help: the flag package stops at the first argument that
// is not a flag, so that "requeue ID -resume" would take -resume for a
// task id and requeue ID without it. After a "--" every argument is an
// argument.
func (c *cli) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usagef("%v", err)
	}
	if !terminated(fs, args) {
		for _, a := range fs.Args() {
			name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
			if !strings.HasPrefix(a, "-") {
				continue
			}
			if name == "h" || name == "help" {
				return errHelp
			}
			if fs.Lookup(name) != nil {
				return usagef("flag %s after the task ids: give flags first (flows %s -%s ... ID...)", a, fs.Name(), name)
			}
		}
	}
	return c.open()
}

// terminated reports whether fs.Parse(args), which succeeded, stopped at
// a "--" rather than at the first argument that is not a flag. It steps
// through the arguments fs read as the flag package does: a flag that is
// not boolean and has no "=" takes the next argument as its value, even
// "--".
func terminated(fs *flag.FlagSet, args []string) bool {
	for i := 0; i < len(args)-fs.NArg(); i++ {
		a := args[i]
		if a == "--" {
			return true
		}
		name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil || inline {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		i++ // the flag's value
	}
	return false
}
