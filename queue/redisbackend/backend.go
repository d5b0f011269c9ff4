package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Defaults used where a Config field is zero.
const (
	DefaultPrefix       = "flows"
	DefaultQueue        = "default"
	DefaultRetention    = 24 * time.Hour
	DefaultPollInterval = 30 * time.Second
	DefaultOpTimeout    = 5 * time.Second
	DefaultWaitTimeout  = time.Second
)

// group is the consumer group of every queue's stream.
const group = "workers"

// ErrClosed is returned by calls that need the backend's own goroutines
// (Subscribe, Cancellations) after Close.
var ErrClosed = errors.New("redisbackend: backend closed")

// Config configures a Backend. The zero value is usable: a zero field
// takes the default its comment names. New refuses a negative duration or
// count, naming the field.
type Config struct {
	// Prefix starts every key and channel name, so that several
	// applications can share one Redis. Zero means DefaultPrefix. It must
	// not contain '{' or '}'.
	Prefix string
	// Queue names the queue this backend enqueues to and fetches from.
	// Zero means DefaultQueue. It must not contain '{' or '}'.
	Queue string
	// Retention is how long a task's keys are kept at least after they
	// were last written; progress keys may live up to an eighth longer
	// (see the package documentation). Zero means DefaultRetention; it
	// must not be negative.
	Retention time.Duration
	// PollInterval is how often a live subscription with nothing to
	// deliver reads its task's stream directly, which ends subscriptions
	// of tasks whose retention has passed and catches anything pub/sub
	// failed to carry. Zero means DefaultPollInterval; it must not be
	// negative.
	PollInterval time.Duration
	// OpTimeout bounds each operation on Redis (one or two round trips)
	// whose context has no earlier deadline, so that nothing waits for a
	// Redis that is down: the operation then fails with an error wrapping
	// queue.ErrUnavailable. A blocking wait of Fetch gets OpTimeout on top
	// of the time it means to block. Zero means DefaultOpTimeout; it must
	// not be negative.
	OpTimeout time.Duration
	// WaitReplicas turns on durable mode: after the writes that accept a
	// task (Enqueue, CreateAndEnqueue, Requeue) and those that end or give
	// back a lease (Ack, AppendAndAck, Bury, Retry, and an Append whose
	// last event ends the task), the backend waits
	// (WAIT) until that many replicas have them, so that a failover to a
	// replica loses no task that was accepted. An enqueue that is not
	// confirmed in time fails with an error wrapping queue.ErrUnavailable
	// (the primary may still run the task); an end not confirmed is only
	// logged (the task may then run again after a failover). Zero, the
	// default, waits for nothing: Redis replicates asynchronously, and a
	// failover loses what the primary had not yet sent. It must not be
	// negative, and a Redis Cluster client does not take it.
	WaitReplicas int
	// WaitTimeout bounds each wait of durable mode; it must be shorter
	// than OpTimeout. Zero means DefaultWaitTimeout; it must not be
	// negative.
	WaitTimeout time.Duration
	// FetchDelay trades pickup latency for Redis work when tasks come
	// fast, as River's FetchCooldown does. A Fetch that finds the queue
	// empty waits for the next task on Redis at once by default, so that
	// each task is picked up within a round trip of its enqueue, and at a
	// few hundred tasks a second each one costs a wait, a fetch script
	// and an end of its own. With FetchDelay set, while a worker has been
	// taking at least four tasks per FetchDelay (over about the last
	// second), a Fetch of it that would wait for work first lets
	// FetchDelay pass since the worker last took tasks (or less, when a
	// delayed task is due or a lease passes sooner, never more than half
	// the time its context has left), holding nothing, and then takes
	// every task that arrived meanwhile in one round trip and one script;
	// tasks taken together also tend to end together, and their ends then
	// share a script too (see the package documentation). A task then
	// waits up to FetchDelay longer to start. At a slower pace a Fetch
	// waits at once, so a task that comes alone is still picked up within
	// a round trip; a Fetch with tasks ready takes them at once whatever
	// FetchDelay is, so a backlog never waits for it; and an idle worker
	// costs Redis no more. At 200 tasks a second, 100 ms cut a task's
	// Redis commands from 27 to 15 and its Redis CPU by about two
	// fifths, for a pickup 51 ms later at the median and 101 ms at p99
	// (see the README, Batching). Zero, the default, means no delay; it
	// must not be negative.
	FetchDelay time.Duration
	// EnqueueDelay trades start latency for Redis work at low rates, on
	// the enqueuing side as FetchDelay does on the worker's. A
	// CreateAndEnqueue (a Broker's start with the backend as its store)
	// made while no other is in flight runs at once by default, and at a
	// few hundred tasks a second each one does: a script, its index
	// writes and a wake-up of Redis of its own. With EnqueueDelay set,
	// such a call first waits up to EnqueueDelay (never more than a
	// second, nor more than half the time its context has left) for
	// others to join it, and they are created and queued together in one
	// script and one round trip, as Nagle's algorithm or a Kafka
	// producer's linger.ms gather writes. A start then returns up to
	// EnqueueDelay later. Calls made while a batch is in flight go in the
	// next one at once (a call that would go alone in it waits as a
	// first call does), and a batch that is full (128 tasks) goes at
	// once, so a busy backend waits for nothing more; but a caller that
	// awaits each enqueue before making the next gets at most one through
	// per EnqueueDelay, so it suits starts that come from independent
	// requests, not a loop. A call whose context ends while it waits is
	// left out (nothing is written). Close sends the waiting calls at
	// once. On a Redis Cluster client, where creates are never batched,
	// it has no effect. Zero, the default, means no delay; it must not be
	// negative.
	EnqueueDelay time.Duration
	// AckDelay trades the time a task's end takes to be recorded for
	// Redis work at low rates, at the end of a task as EnqueueDelay does
	// at its start. An AppendAndAck or Ack (a worker recording a task's
	// end and releasing its lease) made while no other is in flight runs
	// at once by default, and at a few hundred tasks a second most do:
	// tasks taken in one Fetch end a few milliseconds apart, and each
	// end costs a script, its index writes and a wake-up of Redis of its
	// own. With AckDelay set, such a call first waits up to AckDelay
	// (never more than a second, nor more than half the time its
	// context has left) for others to join it, and they are recorded
	// and acknowledged together in one script and one round trip. A
	// task's terminal event then reaches Redis, and its watchers, up to
	// AckDelay later, and the worker's slot stays taken that much
	// longer, as does the slot of a flow limited by registry.Concurrency
	// (it is freed by the end): a flow limited to n at once whose tasks
	// end alone runs at most n of them per AckDelay. Calls made while a batch is in flight go in the next one
	// at once (a call that would go alone in it waits as a first call
	// does), and a full batch goes at once, so a busy worker waits for
	// nothing more. A call whose context ends while it waits is left
	// out: nothing of it is written, and the lease it did not release
	// passes and the task runs again, as after any end that failed.
	// Close sends the waiting calls at once. On a Redis Cluster client,
	// where ends are never batched, it has no effect. Zero, the default,
	// means no delay; it must not be negative. A few milliseconds are
	// enough for the ends of one Fetch to share a script.
	AckDelay time.Duration
	// Logger receives the backend's warnings. Nil means slog.Default().
	Logger *slog.Logger
}

// Backend is a queue.Backend and a progress.Backend on Redis. Create it
// with New; it is safe for concurrent use. The rueidis client stays the
// caller's: Close stops what the Backend started but does not close the
// client.
type Backend struct {
	client rueidis.Client
	cfg    Config
	log    *slog.Logger
	qkeys  queueKeys
	// cluster is set for a Redis Cluster client, whose scripts may only
	// touch the keys of one slot: scripts then act on one task at a time
	// and never on a task's keys together with the queue's.
	cluster bool

	hub *hub
	// beats is the connection of the worker's heartbeats (see Heartbeat).
	beats beatLine
	// replaced logs the subscriptions ended by a failover (see
	// subscribe.go).
	replaced replacedLog
	// plans keeps what each worker's last Fetch learnt of how to wait.
	plans fetchPlans
	// appends batches concurrent Appends.
	appends *batcher[appendCall, string]
	// acks batches concurrent Acks.
	acks *batcher[ackCall, struct{}]
	// creates batches concurrent CreateAndEnqueues.
	creates *batcher[createCall, struct{}]
	// snapshots batches concurrent Snapshots.
	snapshots *batcher[string, snapshotRead]
	// checkpoints batches concurrent SaveCheckpoints.
	checkpoints *batcher[checkpointCall, struct{}]
	// finishes batches concurrent AppendAndAcks; nil on a Redis Cluster
	// client, where finishScript cannot run.
	finishes *batcher[finishCall, finishResult]
	// index remembers the upkeep of the task index (see index.go).
	index indexState
	// sweep remembers when this process last looked for cut starts, and
	// cutAfterTest, when cutAfterSet, replaces cutAfter (see starts.go).
	sweep        sweepState
	cutAfterSet  bool
	cutAfterTest time.Duration
	// cutStart, set by tests only, is called with the task's id between
	// the record and the queue entry of a start taken in steps (see
	// starts.go), a re-queue's included: an error it returns ends the
	// start there, as a process that dies between them, or an error of
	// Redis, would.
	cutStart func(id string) error

	// ctx ends when Close is called; every goroutine of the backend
	// watches it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ queue.Backend    = (*Backend)(nil)
	_ queue.Retirer    = (*Backend)(nil)
	_ queue.Admitter   = (*Backend)(nil)
	_ progress.Backend = (*Backend)(nil)
)

// New returns a Backend that runs on client with the settings of cfg. It
// fails on a nil client and on a cfg that cannot work: braces in Prefix or
// Queue, a negative duration or WaitReplicas (the error names the field),
// WaitReplicas on a Redis Cluster client or with a WaitTimeout not shorter
// than OpTimeout.
func New(client rueidis.Client, cfg Config) (*Backend, error) {
	if client == nil {
		return nil, errors.New("redisbackend: nil client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Queue == "" {
		cfg.Queue = DefaultQueue
	}
	if strings.ContainsAny(cfg.Prefix, "{}") || strings.ContainsAny(cfg.Queue, "{}") {
		return nil, fmt.Errorf("redisbackend: prefix %q and queue %q must not contain braces", cfg.Prefix, cfg.Queue)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Retention", cfg.Retention}, {"PollInterval", cfg.PollInterval}, {"OpTimeout", cfg.OpTimeout}, {"WaitTimeout", cfg.WaitTimeout}} {
		if f.d < 0 {
			return nil, fmt.Errorf("redisbackend: %s must not be negative, got %v (zero means the default)", f.name, f.d)
		}
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.FetchDelay < 0:
		return nil, fmt.Errorf("redisbackend: FetchDelay must not be negative, got %v", cfg.FetchDelay)
	case cfg.EnqueueDelay < 0:
		return nil, fmt.Errorf("redisbackend: EnqueueDelay must not be negative, got %v", cfg.EnqueueDelay)
	case cfg.AckDelay < 0:
		return nil, fmt.Errorf("redisbackend: AckDelay must not be negative, got %v", cfg.AckDelay)
	case cfg.WaitReplicas < 0:
		return nil, fmt.Errorf("redisbackend: WaitReplicas must not be negative, got %d", cfg.WaitReplicas)
	case cfg.WaitReplicas > 0 && client.Mode() == rueidis.ClientModeCluster:
		return nil, errors.New("redisbackend: WaitReplicas (durable mode) is not available on a Redis Cluster client")
	case cfg.WaitReplicas > 0 && cfg.WaitTimeout >= cfg.OpTimeout:
		return nil, fmt.Errorf("redisbackend: WaitTimeout %v must be shorter than OpTimeout %v", cfg.WaitTimeout, cfg.OpTimeout)
	}
	b := &Backend{
		client:  client,
		cfg:     cfg,
		log:     cfg.Logger,
		qkeys:   newQueueKeys(cfg.Prefix + ":{q:" + cfg.Queue + "}"),
		cluster: client.Mode() == rueidis.ClientModeCluster,
	}
	if b.cluster {
		b.client = patientClient{client}
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.appends = newBatcher(b, b.runAppends, func(c appendCall) int { return len(c.args) })
	b.acks = newBatcher(b, b.runAcks, func(ackCall) int { return 3 })
	b.creates = newBatcher(b, b.runCreates, func(c createCall) int { return len(c.args) })
	b.snapshots = newBatcher(b, b.runSnapshots, func(string) int { return snapshotCommands })
	b.checkpoints = newBatcher(b, b.runCheckpoints, checkpointWeight)
	if !b.cluster {
		b.finishes = newBatcher(b, b.runFinishes, func(c finishCall) int { return len(c.args) })
		// Lingers, where calls are batched (see batcher).
		b.creates.linger, b.creates.flush = min(cfg.EnqueueDelay, maxDelay), b.ctx.Done()
		b.finishes.linger, b.finishes.flush = min(cfg.AckDelay, maxDelay), b.ctx.Done()
		b.acks.linger, b.acks.flush = min(cfg.AckDelay, maxDelay), b.ctx.Done()
	}
	b.hub = newHub(b.ctx, client, b.cluster, cfg.Logger, &b.wg, cfg.OpTimeout)
	return b, nil
}

// Close stops the backend's goroutines and its pub/sub connection, ending
// every subscription and cancellation listener, and waits for them. It
// does not close the rueidis client. Calling Close again does nothing.
func (b *Backend) Close() error {
	b.cancel()
	b.wg.Wait()
	b.beats.close()
	return nil
}

// Prefix returns the prefix of the backend's keys and channels.
func (b *Backend) Prefix() string { return b.cfg.Prefix }

// Queue returns the name of the backend's queue.
func (b *Backend) Queue() string { return b.cfg.Queue }

// closed reports whether Close has been called.
func (b *Backend) closed() bool { return b.ctx.Err() != nil }

// Keys of a task; see the package documentation.
func (b *Backend) taskKey(id string) string   { return b.cfg.Prefix + ":{" + id + "}:task" }
func (b *Backend) stepsKey(id string) string  { return b.cfg.Prefix + ":{" + id + "}:steps" }
func (b *Backend) eventsKey(id string) string { return b.cfg.Prefix + ":{" + id + "}:events" }
func (b *Backend) liveChannel(id string) string {
	return b.cfg.Prefix + ":{" + id + "}:live"
}

// queueKeys are the names of the queue's keys, made once by New from
// their prefix "P:{q:Q}".
type queueKeys struct {
	stream, delayed, leases, wake, dead, buried, cancel string
	index, flows, workers, seen                         string
	oldLeases, oldHolders                               string // see lua/lib/legacy.lua
	deadlines, contact, swept                           string // see reclaim.go
	limit                                               string // see limit.go
	hooks                                               string // see depth.go
	starting                                            string // see starts.go
}

func newQueueKeys(qtag string) queueKeys {
	return queueKeys{
		stream: qtag + ":stream", delayed: qtag + ":delayed", leases: qtag + ":leased",
		oldLeases: qtag + ":leases", oldHolders: qtag + ":holders", wake: qtag + ":wake",
		dead: qtag + ":dead", buried: qtag + ":buried", cancel: qtag + ":cancel",
		index: qtag + ":index", flows: qtag + ":flows", workers: qtag + ":workers", seen: qtag + ":workers:seen",
		deadlines: qtag + ":workers:deadlines", contact: qtag + ":workers:contact", swept: qtag + ":workers:swept", limit: qtag + ":limit", hooks: qtag + ":delayed:hooks",
		starting: qtag + ":starting",
	}
}

// Keys of the queue.
func (b *Backend) streamKey() string     { return b.qkeys.stream }
func (b *Backend) delayedKey() string    { return b.qkeys.delayed }
func (b *Backend) hooksKey() string      { return b.qkeys.hooks }
func (b *Backend) leasesKey() string     { return b.qkeys.leases }
func (b *Backend) wakeKey() string       { return b.qkeys.wake }
func (b *Backend) deadKey() string       { return b.qkeys.dead }
func (b *Backend) buriedKey() string     { return b.qkeys.buried }
func (b *Backend) cancelChannel() string { return b.qkeys.cancel }

// retentionMS is the retention in milliseconds, as PEXPIRE takes it.
func (b *Backend) retentionMS() int64 { return b.cfg.Retention.Milliseconds() }

// keepMS is the time to live, in ms, of progress keys that must live at
// least ttl: an eighth of the retention more, so that the writes that
// follow within that eighth need not move it (see lua/lib/append.lua).
func (b *Backend) keepMS(ttl time.Duration) int64 {
	return ttl.Milliseconds() + b.retentionMS()/8
}

// Batch limits: the calls of one script invocation, and their ARGV
// values. They keep one script's run on the Redis thread short (well
// under a millisecond).
const (
	maxBatch     = 128
	maxBatchArgs = 4096
)

// maxDelay bounds Config.EnqueueDelay and Config.AckDelay.
const maxDelay = time.Second

// newBatcher returns a batcher for one operation of b. Against a Redis
// Cluster, where one script may only touch keys of one slot, batches hold
// one call each.
func newBatcher[T, R any](b *Backend, run func(context.Context, []*batchCall[T, R]), weight func(T) int) *batcher[T, R] {
	n := maxBatch
	if b.cluster {
		n = 1
	}
	return &batcher[T, R]{
		max: n, weight: weight, maxWeight: maxBatchArgs, run: run,
		bound: func(parent context.Context) (context.Context, context.CancelFunc) { return b.bound(parent, 0) },
	}
}

// errNoAnswer is the cause of a context ended by bound.
var errNoAnswer = errors.New("no answer from Redis in time")

// bound limits ctx to OpTimeout from now, plus extra for a command that
// blocks on purpose, unless ctx ends sooner. Every operation runs under
// it: rueidis retries read-only commands until their context ends, so
// without it a caller with no deadline would wait as long as Redis is
// down.
func (b *Backend) bound(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, addDur(b.cfg.OpTimeout, extra), errNoAnswer)
}

// addDur is a+b for durations that are not negative, or the largest
// duration where the sum would overflow: the largest durations of a
// Config mean no bound, and must not wrap into a deadline in the past or
// a negative time to live.
func addDur(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// wrap adds context to an error of an operation run under ctx, a context
// from bound not yet cancelled. Errors of the connection (not error replies of the server),
// running out of OpTimeout, and the replies of a server that refused the
// call unrun (see refusedUnrun), also wrap queue.ErrUnavailable; the end of
// the caller's own context is kept as it is.
func (b *Backend) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, isReply := rueidis.IsRedisErr(err); isReply {
		if refusedUnrun(err) {
			if advice := refusalAdvice(err); advice != "" {
				return fmt.Errorf("redisbackend: %s: %w: %w: %s: %w", op, queue.ErrUnavailable, progress.ErrNotSent, advice, err)
			}
			return fmt.Errorf("redisbackend: %s: %w: %w: %w", op, queue.ErrUnavailable, progress.ErrNotSent, err)
		}
		return fmt.Errorf("redisbackend: %s: %w", op, err)
	}
	// First, whatever ended the dial: one that timed out (a host that
	// drops the connection attempt) is as certainly unsent as one refused.
	if notSent(err) {
		return fmt.Errorf("redisbackend: %s: %w: %w: %w", op, queue.ErrUnavailable, progress.ErrNotSent, err)
	}
	ctxErr := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	// A context error while ctx is still live comes from a deadline
	// rueidis derived from ctx's, which may fire a moment before ctx's own.
	if errors.Is(context.Cause(ctx), errNoAnswer) || (ctxErr && ctx.Err() == nil) {
		return fmt.Errorf("redisbackend: %s: %w: %w within %v", op, queue.ErrUnavailable, errNoAnswer, b.cfg.OpTimeout)
	}
	if ctxErr {
		return fmt.Errorf("redisbackend: %s: %w", op, err)
	}
	return fmt.Errorf("redisbackend: %s: %w: %w", op, queue.ErrUnavailable, err)
}

// notSent reports whether err, an error of the connection, says that no
// connection could be made (dial refused, no route, timed out): while
// Redis is down, rueidis fails a command with the error of its attempt to
// reconnect, without sending it. A dial that times out is a *net.OpError
// of Op "dial" too, whose cause may match context.DeadlineExceeded. A connection that breaks once a command is written
// gives another error (a reset, EOF), and the command's outcome is
// unknown then.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// refusedUnrun reports whether err is an error reply with which a server
// refuses a command before running any of it because it cannot take it
// now, while a client follows a failover or a restart or while the
// server is held up: READONLY (a replica, such as a former primary that
// rejoins after a failover and that a client has not yet left; the
// scripts that write open with a shebang so that a replica refuses them
// so, see script.go), LOADING (a server loading its data at start),
// MASTERDOWN (a replica that lost its primary), BUSY (another script, or
// a module's command, has run past the server's busy-reply-threshold:
// until it ends or SCRIPT KILL ends it, the server refuses every other
// command whole, a script as much as one command), and, on a cluster,
// TRYAGAIN (a command on several keys of a slot whose keys are moving to
// another node) and CLUSTERDOWN (a failover under way), which reach here
// once patientClient has sent them again until the context ended; and
// the refusals of a server that takes no writes for now: OOM (its used
// memory is past its maxmemory and its maxmemory-policy is noeviction, as
// the README advises), NOREPLICAS (fewer replicas in sync than its
// min-replicas-to-write) and MISCONF (it cannot persist to disk: its last
// RDB save failed, while it has a save point and
// stop-writes-on-bgsave-error is yes, the default, or a write to its
// append-only file failed). Nothing was done, so that the call may be
// made again, and the server is not usable for it now: such errors wrap
// queue.ErrUnavailable and progress.ErrNotSent. The codes are compared
// whole: BUSYGROUP (a consumer group that exists) and BUSYKEY are other
// replies.
//
// Redis (7.0 and later) refuses those three before a command runs, as it
// does the others: a single command whole; a transaction at EXEC, whole
// (under OOM, every command queued in it, reads too; under MISCONF, one
// that holds a write); a script with flags (a shebang: the scripts that
// write, see script.go), whole, before it runs, unless it says allow-oom
// (ack.lua, which only frees memory) under OOM; and a script without
// flags at its first write that may grow memory (OOM) or its first write
// (NOREPLICAS, MISCONF), never after it wrote: the write raises the
// error, which ends the script (the scripts without flags catch no
// write's error with redis.pcall; fetch.lua, which does, has flags), so
// that a refused script wrote nothing. TestOutOfMemoryRefusesBeforeAnyWrite
// and TestDiskErrorRefusesBeforeAnyWrite pin this on the real server;
// TestWriteRefusalIsUnsent checks each call that writes. A pipeline of
// several commands is not one unit: Redis may run its first commands and
// refuse a later one. The starts that take several commands (a limited
// flow's, a Cluster client's, a re-queue) are marked in the starting set
// first, so that one refused part way is swept (see starts.go).
func refusedUnrun(err error) bool {
	switch replyCode(err) {
	case "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "NOREPLICAS", "MISCONF":
		return true
	}
	return false
}

// refusalAdvice returns what an operator should know of a refusal that
// lasts until the operator acts (see refusedUnrun), to go in its error,
// or "" for the refusals that end by themselves.
func refusalAdvice(err error) string {
	switch replyCode(err) {
	case "OOM":
		return "Redis is out of memory (maxmemory): it takes no writes until memory is freed or maxmemory is raised (see INFO memory, and the README's \"What Redis must keep\")"
	case "NOREPLICAS":
		return "Redis has fewer replicas in sync than its min-replicas-to-write: it takes no writes until a replica catches up or the setting is lowered (see INFO replication)"
	case "MISCONF":
		if strings.Contains(err.Error(), "the AOF file") {
			return "Redis cannot write its append-only file to disk: it takes no writes until a write to the file succeeds, which it tries again every second (free space on the disk or mend its dir; see aof_last_write_status in INFO persistence, and its log)"
		}
		return "Redis cannot save its snapshot to disk (its last background save failed): it takes no writes until a save succeeds (free space on the disk or mend its dir, then run BGSAVE; see rdb_last_bgsave_status in INFO persistence, and its log) or stop-writes-on-bgsave-error is set to no"
	}
	return ""
}

// replyCode returns the first word of a Redis error reply ("NOTFOUND",
// "BUSYGROUP", ...), or "" for other errors.
func replyCode(err error) string {
	re, ok := rueidis.IsRedisErr(err)
	if !ok || re.IsNil() {
		return ""
	}
	code, _, _ := strings.Cut(re.Error(), " ")
	return code
}
