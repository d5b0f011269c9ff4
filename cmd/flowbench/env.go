package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/redisform"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// clientName names the connections of the benchmarked code in CLIENT
// LIST; the command's own admin connection has another name.
const clientName = "flowbench"

// retention of the benchmark's keys: long enough for any run, short
// enough not to clutter a Redis given with REDIS_URL.
const retention = 30 * time.Minute

// discard is the logger of the benchmarked code.
var discard = slog.New(slog.DiscardHandler)

// env is what every run shares: the Redis server (started here, or given)
// and an admin connection to it.
type env struct {
	cfg     config
	proc    *redisproc.Server  // nil unless started here
	replica *redisproc.Server  // nil unless started here (-replica)
	cluster *redisproc.Cluster // nil unless started here (-cluster)
	url     string
	admin   rueidis.Client
	version string
	// masters are the Redis servers that hold data: the one Redis, or
	// the masters of a cluster, by address, in address order. The
	// figures of commands and Redis CPU add theirs up.
	masters []master
}

// master is a Redis server that holds data, and a client of it alone.
type master struct {
	addr   string
	client rueidis.Client
}

func newEnv(ctx context.Context, cfg config) (*env, error) {
	e := &env{cfg: cfg}
	if cfg.Backend == "memory" {
		return e, nil
	}
	e.url = cfg.RedisURL
	switch {
	case e.url != "":
	case cfg.Cluster:
		c, err := redisproc.StartCluster(redisproc.ClusterOptions{Masters: cfg.Masters})
		if err != nil {
			return nil, err
		}
		e.cluster, e.url = c, c.URL()
	default:
		proc, err := redisproc.Start(redisproc.Options{})
		if err != nil {
			return nil, err
		}
		e.proc, e.url = proc, proc.URL()
		if cfg.Replica {
			if e.replica, err = startReplica(proc); err != nil {
				e.close()
				return nil, err
			}
		}
	}
	opt, err := redisform.ParseURL(e.url) // its errors without the URL's credentials
	if err != nil {
		e.close()
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opt.ClientName = clientName + "-admin"
	opt.DisableCache = true
	// No keep-alive PING each second on the admin connection, which is
	// idle through a run: flowbench's own commands are not a task's cost.
	opt.Dialer.KeepAlive = -1
	if e.admin, err = rueidis.NewClient(opt); err != nil {
		e.close()
		return nil, fmt.Errorf("connect to redis: %w", redact.Error(err, redact.Secrets(e.url)...))
	}
	info, err := e.admin.Do(ctx, e.admin.B().Info().Section("server").Build()).ToString()
	if err != nil {
		e.close()
		return nil, fmt.Errorf("redis info: %w", err)
	}
	e.version = infoField(info, "redis_version")
	if err := e.findMasters(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// findMasters lists the servers of the admin client that are masters.
func (e *env) findMasters(ctx context.Context) error {
	nodes := e.admin.Nodes()
	for _, addr := range slices.Sorted(maps.Keys(nodes)) {
		n := nodes[addr]
		info, err := n.Do(ctx, n.B().Info().Section("replication").Build()).ToString()
		if err != nil {
			return fmt.Errorf("redis info of %s: %w", addr, err)
		}
		if infoField(info, "role") == "master" {
			e.masters = append(e.masters, master{addr: addr, client: n})
		}
	}
	if len(e.masters) == 0 {
		return errors.New("no Redis master found")
	}
	return nil
}

// startReplica starts a replica of primary and waits until it is in
// sync.
func startReplica(primary *redisproc.Server) (*redisproc.Server, error) {
	r, err := redisproc.Start(redisproc.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())}})
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(redisproc.StartTimeout); ; {
		info, err := redisproc.DoString(r.Addr(), "INFO", "replication")
		if err == nil && infoField(info, "master_link_status") == "up" {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.Close()
			return nil, fmt.Errorf("replica not in sync with the primary within %v", redisproc.StartTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sharded reports whether the data is spread over several masters.
func (e *env) sharded() bool { return len(e.masters) > 1 }

func (e *env) close() {
	if e.admin != nil {
		e.admin.Close()
	}
	if e.replica != nil {
		e.replica.Close()
	}
	if e.proc != nil {
		e.proc.Close()
	}
	if e.cluster != nil {
		e.cluster.Close()
	}
}

func (e *env) describe() string {
	switch {
	case e.cfg.Backend == "memory":
		return "backend memory (no Redis)"
	case e.proc != nil && e.replica != nil:
		return fmt.Sprintf("backend redis, own redis-server %s on %s with a replica on %s (no persistence), wait-replicas %d",
			e.version, e.proc.Addr(), e.replica.Addr(), e.cfg.WaitReplicas)
	case e.proc != nil:
		return fmt.Sprintf("backend redis, own redis-server %s on %s (no persistence)", e.version, e.proc.Addr())
	case e.cluster != nil:
		return fmt.Sprintf("backend redis, own Redis Cluster %s of %d masters on %s (no persistence)",
			e.version, len(e.masters), strings.Join(e.masterAddrs(), ", "))
	case e.sharded():
		return fmt.Sprintf("backend redis, Redis Cluster %s of %d masters at REDIS_URL", e.version, len(e.masters))
	default:
		return fmt.Sprintf("backend redis, redis %s at REDIS_URL", e.version)
	}
}

func (e *env) redis() bool { return e.cfg.Backend == "redis" }

// stack is a fresh queue and progress store for one run.
type stack struct {
	queue   queue.Backend
	store   progress.Backend
	counter *redistrips.Client // nil in memory
	writes  *atomic.Int64      // socket writes of the benchmarked client; nil in memory
	close   func()
}

// newStack returns a new backend: in memory, or on Redis with a key
// prefix of its own and a client that counts its round trips. On a Redis
// started here, the database is emptied first so that runs start alike.
func (e *env) newStack(ctx context.Context) (*stack, error) {
	if !e.redis() {
		return &stack{
			queue: queue.NewMemory(queue.MemoryConfig{}),
			store: progress.NewMemoryStore(progress.MemoryConfig{}),
			close: func() {},
		}, nil
	}
	if e.proc != nil || e.cluster != nil {
		for _, m := range e.masters {
			if err := m.client.Do(ctx, m.client.B().Flushall().Sync().Build()).Error(); err != nil {
				return nil, fmt.Errorf("flushall on %s: %w", m.addr, err)
			}
		}
	}
	opt, err := redisform.ParseURL(e.url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	writes := new(atomic.Int64)
	opt.ClientName = clientName
	opt.DisableCache = true
	opt.MaxFlushDelay = e.cfg.FlushDelay
	opt.PipelineMultiplex = e.cfg.Multiplex
	opt.DisableAutoPipelining = e.cfg.NoAutoPipe
	// Count the writes of the connections dialed as ParseURL's options
	// dial them: its DialCtxFn makes the TLS certificate check (valid for
	// the dialed host or the URL's) and dials a unix:// URL's socket.
	dial := opt.DialCtxFn
	opt.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, tc *tls.Config) (net.Conn, error) {
		var conn net.Conn
		var err error
		switch {
		case dial != nil:
			conn, err = dial(ctx, addr, d, tc)
		case tc != nil:
			conn, err = (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", addr)
		default:
			conn, err = d.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: conn, writes: writes}, nil
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", redact.Error(err, redact.Secrets(e.url)...))
	}
	// A worker's heartbeats go on a dedicated connection.
	counter := &redistrips.Client{Client: client, CountDedicated: true}
	var random [6]byte
	_, _ = rand.Read(random[:])
	prefix := "flowbench-" + hex.EncodeToString(random[:])
	b, err := redisbackend.New(counter, redisbackend.Config{
		Prefix:       prefix,
		Retention:    retention,
		WaitReplicas: e.cfg.WaitReplicas,
		FetchDelay:   e.cfg.FetchDelay,
		EnqueueDelay: e.cfg.EnqueueDelay,
		AckDelay:     e.cfg.AckDelay,
		Logger:       discard,
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	return &stack{
		queue:   b,
		store:   b,
		counter: counter,
		writes:  writes,
		close: func() {
			_ = b.Close()
			client.Close()
			if e.proc == nil && e.cluster == nil {
				e.expireKeys(prefix)
			}
		},
	}, nil
}

// expireKeys gives the keys under prefix that have no expiry the
// benchmark's retention, on every master of a Redis given with REDIS_URL:
// the backend expires a task's keys but keeps the queue's own (its
// streams, indexes and set of flows) for as long as the queue lives, and
// a prefix is never used again. Best effort: a key left behind does not
// make a run fail.
func (e *env) expireKeys(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range e.masters {
		var cursor uint64
		for {
			page, err := m.client.Do(ctx, m.client.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				break
			}
			cmds := make(rueidis.Commands, 0, len(page.Elements))
			for _, k := range page.Elements {
				cmds = append(cmds, m.client.B().Pexpire().Key(k).Milliseconds(retention.Milliseconds()).Nx().Build())
			}
			if len(cmds) > 0 {
				m.client.DoMulti(ctx, cmds...)
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
	}
}

// countingConn counts the writes to a connection: with pipelining, one
// write carries every command queued meanwhile.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// commandCalls returns the total calls of INFO commandstats (commands run
// by scripts included) on every master, leaving out the admin commands of
// flowbench itself, the calls of each command, and the total of each
// master.
func (e *env) commandCalls(ctx context.Context) (int64, map[string]int64, []int64, error) {
	var total int64
	calls := map[string]int64{}
	perMaster := make([]int64, len(e.masters))
	for i, m := range e.masters {
		info, err := m.client.Do(ctx, m.client.B().Info().Section("commandstats").Build()).ToString()
		if err != nil {
			return 0, nil, nil, fmt.Errorf("info commandstats of %s: %w", m.addr, err)
		}
		for line := range strings.SplitSeq(info, "\n") {
			name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
			name, isCmd := strings.CutPrefix(name, "cmdstat_")
			if !ok || !isCmd || name == "info" || name == "client|list" || name == "flushall" || name == "cluster|slots" || name == "cluster|shards" {
				continue
			}
			for kv := range strings.SplitSeq(stats, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						return 0, nil, nil, fmt.Errorf("commandstats %s: %w", name, err)
					}
					calls[name] += n
					perMaster[i] += n
					total += n
				}
			}
		}
	}
	return total, calls, perMaster, nil
}

// traffic is the Redis traffic of a run, per task: round trips of the
// benchmarked client (calls), writes on its sockets, commands Redis ran
// (INFO commandstats, script internals included), and the commands by
// name, in all (not per task).
type traffic struct {
	calls, writes, commands float64
	perCommand              map[string]int64
	// perMaster is each master's share of the commands (0..1), in the
	// order of env.masters.
	perMaster []float64
}

// trafficMeter measures the traffic of a run from the moment it is made.
type trafficMeter struct {
	e                       *env
	st                      *stack
	calls, writes, commands int64
	perCommand              map[string]int64
	perMaster               []int64
}

// meterTraffic starts measuring the traffic of st's client; in memory,
// with no client to count, the meter measures nothing.
func (e *env) meterTraffic(ctx context.Context, st *stack) (*trafficMeter, error) {
	m := &trafficMeter{e: e, st: st}
	if st.counter == nil {
		return m, nil
	}
	var err error
	if m.commands, m.perCommand, m.perMaster, err = e.commandCalls(ctx); err != nil {
		return nil, err
	}
	m.calls, m.writes = st.counter.Trips(), st.writes.Load()
	return m, nil
}

// perTask returns the traffic since the meter was made, per task of n.
func (m *trafficMeter) perTask(ctx context.Context, n int) (traffic, error) {
	var t traffic
	if m.st.counter == nil {
		return t, nil
	}
	commands, perCommand, perMaster, err := m.e.commandCalls(ctx)
	if err != nil {
		return t, err
	}
	for i, c := range perMaster {
		t.perMaster = append(t.perMaster, float64(c-m.perMaster[i])/float64(max(commands-m.commands, 1)))
	}
	t.calls = float64(m.st.counter.Trips()-m.calls) / float64(n)
	t.writes = float64(m.st.writes.Load()-m.writes) / float64(n)
	t.commands = float64(commands-m.commands) / float64(n)
	t.perCommand = map[string]int64{}
	for name, c := range perCommand {
		if d := c - m.perCommand[name]; d > 0 {
			t.perCommand[name] = d
		}
	}
	return t, nil
}

// connections returns the number of connections named clientName that
// the Redis servers have open: the benchmarked client's.
func (e *env) connections(ctx context.Context) (int, error) {
	n := 0
	for addr, node := range e.admin.Nodes() {
		list, err := node.Do(ctx, node.B().ClientList().Build()).ToString()
		if err != nil {
			return 0, fmt.Errorf("client list of %s: %w", addr, err)
		}
		for line := range strings.SplitSeq(list, "\n") {
			if strings.Contains(line, " name="+clientName+" ") {
				n++
			}
		}
	}
	return n, nil
}

// infoField returns the value of one field of an INFO reply.
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// redisCPU returns the CPU time the masters have used, in all and each
// (0 when it cannot be read), from INFO cpu.
func (e *env) redisCPU(ctx context.Context) (time.Duration, []time.Duration) {
	var total time.Duration
	each := make([]time.Duration, len(e.masters))
	for i, m := range e.masters {
		info, err := m.client.Do(ctx, m.client.B().Info().Section("cpu").Build()).ToString()
		if err != nil {
			continue
		}
		var secs float64
		for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
			v, _ := strconv.ParseFloat(infoField(info, f), 64)
			secs += v
		}
		each[i] = time.Duration(secs * float64(time.Second))
		total += each[i]
	}
	return total, each
}

// masterAddrs returns the addresses of the masters.
func (e *env) masterAddrs() []string {
	addrs := make([]string, len(e.masters))
	for i, m := range e.masters {
		addrs[i] = m.addr
	}
	return addrs
}
