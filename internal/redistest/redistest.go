// Package redistest starts throwaway redis-server processes for tests.
//
// Every Redis-specific test of the module runs against a real server
// started here, on a free port (never 6379) in a temporary directory, and
// stopped when the test ends:
//
//	srv := redistest.Start(t)
//	client := srv.Client(t)
//
// StartCluster starts a Redis Cluster the same way (three masters by
// default, joined by redis-cli --cluster create), and StartSentinel a
// primary, its replica and three sentinels:
//
//	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
//	client := cluster.Client(t) // a rueidis Cluster client
//
// A machine without redis-server (or, for a cluster, redis-cli) makes the
// test fail with a message on how to install it; such tests never skip. The process itself is run by
// package redisproc, which the benchmark command shares.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redisproc"
)

// InstallHint is the message of the failure reported when redis-server is
// not on PATH.
const InstallHint = redisproc.InstallHint

// reservedPort is the port of a developer's own Redis, which tests never
// touch.
const reservedPort = redisproc.ReservedPort

// Options configures a server started with StartWith. The zero value is
// the default of Start: no persistence at all.
type Options struct {
	// AppendOnly turns the append-only file on, so that data survives
	// Restart.
	AppendOnly bool
	// AppendFsync is the appendfsync policy when AppendOnly is set:
	// "always", "everysec" or "no". Empty means "everysec".
	AppendFsync string
	// Args are extra command-line arguments, appended last so that they
	// override the defaults (for example "--maxmemory", "10mb").
	Args []string
}

func (o Options) proc(dir string) redisproc.Options {
	return redisproc.Options{Dir: dir, AppendOnly: o.AppendOnly, AppendFsync: o.AppendFsync, Args: o.Args}
}

// Server is a redis-server process owned by one test.
type Server struct {
	tb   testing.TB
	proc *redisproc.Server

	mu    sync.Mutex
	admin rueidis.Client
}

// Start starts a redis-server without persistence (--save "" and
// --appendonly no) and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith starts a redis-server configured by opts and stops it when the
// test ends. It fails the test if redis-server is missing or does not
// answer PING in time.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	proc, err := redisproc.Start(opts.proc(tb.TempDir()))
	switch {
	case errors.Is(err, redisproc.ErrNotInstalled):
		tb.Fatalf("%v", err)
	case err != nil:
		tb.Fatalf("redistest: %v", err)
	}
	s := &Server{tb: tb, proc: proc}
	tb.Cleanup(s.cleanup)
	return s
}

// StartReplica starts a replica of primary (--replicaof) configured by
// opts and waits until it is in sync; it is stopped when the test ends.
func StartReplica(tb testing.TB, primary *Server, opts Options) *Server {
	tb.Helper()
	opts.Args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())}, opts.Args...)
	r := StartWith(tb, opts)
	deadline := time.Now().Add(ClusterTimeout)
	for {
		info, err := r.Do("INFO", "replication").ToString()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: replica on port %d not in sync with port %d within %v: %v", r.Port(), primary.Port(), ClusterTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func buildArgs(port int, dir string, opts Options) []string {
	return redisproc.Args(port, dir, opts.proc(dir))
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error { return redisproc.Ping(addr) }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.proc.Addr() }

// URL returns the server's address as a redis:// URL, the form REDIS_URL
// takes.
func (s *Server) URL() string { return s.proc.URL() }

// Port returns the server's port.
func (s *Server) Port() int { return s.proc.Port() }

// Dir returns the server's working directory, where its append-only file
// and its log (redis.log) live.
func (s *Server) Dir() string { return s.proc.Dir() }

// ClientOption returns the rueidis options Client uses, for tests that need
// to adjust them before calling rueidis.NewClient.
func (s *Server) ClientOption() rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress:  []string{s.Addr()},
		DisableCache: true,
	}
}

// Client returns a new rueidis client connected to the server, closed when
// the test ends.
func (s *Server) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	return newClient(tb, s.ClientOption())
}

// Do runs an arbitrary command, such as Do("CLIENT", "LIST"), on an admin
// connection of the server's own. Errors, including a server that is down,
// are in the result. While the server is running, a connection broken by
// a restart is retried for a few seconds.
func (s *Server) Do(args ...string) rueidis.RedisResult {
	c, err := s.adminClient()
	if err != nil {
		return rueidis.NewErrorResult(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		res := c.Do(context.Background(), c.B().Arbitrary(args...).Build())
		err := res.Error()
		if _, isRedis := rueidis.IsRedisErr(err); err == nil || isRedis || !s.Running() || time.Now().After(deadline) {
			return res
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) adminClient() (rueidis.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admin != nil {
		return s.admin, nil
	}
	c, err := rueidis.NewClient(s.ClientOption())
	if err != nil {
		return nil, fmt.Errorf("redistest: connect to %s: %w", s.Addr(), err)
	}
	s.admin = c
	return c, nil
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool { return s.proc.Running() }

// Stop shuts the server down gracefully (SIGTERM: an append-only file is
// flushed) and waits for it to exit. Stopping a stopped server does
// nothing.
func (s *Server) Stop() { s.proc.Stop() }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. Writes not yet fsynced to the append-only file are lost.
func (s *Server) Kill() { s.proc.Kill() }

// Restart stops the server if it is running and starts it again on the
// same port and in the same directory, so that an append-only file is
// replayed. It fails the test if the server cannot come back.
func (s *Server) Restart() {
	s.tb.Helper()
	if err := s.proc.Restart(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
}

func (s *Server) cleanup() {
	s.mu.Lock()
	admin := s.admin
	s.admin = nil
	s.mu.Unlock()
	if admin != nil {
		admin.Close()
	}
	s.Kill()
	if s.tb.Failed() {
		s.tb.Logf("redistest: last lines of the log of redis-server on port %d:\n%s", s.Port(), s.proc.LogTail(20))
	}
}

// FailSaves makes the server's RDB snapshots fail, as a full or broken
// disk would, and returns once a background save has failed (INFO
// persistence: rdb_last_bgsave_status:err). A directory stands where the
// snapshot goes, so that the save's last step, renaming its temporary file
// there, fails, whoever runs the server (root too). FailSaves sets a save
// point (Start sets none, and Redis stops writes only for a server with
// one): with stop-writes-on-bgsave-error yes, Redis's default, the server
// then refuses every write with a MISCONF error reply until a save
// succeeds.
//
// The function returned lets saves succeed again, runs BGSAVE and returns
// once it has succeeded, so that the server takes writes again; it also
// runs when tb ends. The save point stays, too far off to be reached in a
// test.
func (s *Server) FailSaves(tb testing.TB) (repair func()) {
	tb.Helper()
	cfg, err := s.Do("CONFIG", "GET", "dbfilename").AsStrMap()
	if err != nil {
		tb.Fatalf("redistest: CONFIG GET dbfilename: %v", err)
	}
	snapshot := filepath.Join(s.Dir(), cfg["dbfilename"])
	// A save that succeeded before (after a repair) left its snapshot there.
	if err := os.Remove(snapshot); err != nil && !errors.Is(err, fs.ErrNotExist) {
		tb.Fatalf("redistest: %v", err)
	}
	if err := os.Mkdir(snapshot, 0o700); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	if err := s.Do("CONFIG", "SET", "save", "86400 1").Error(); err != nil {
		tb.Fatalf("redistest: CONFIG SET save: %v", err)
	}
	s.bgsave(tb, "err")
	repaired := false
	repair = func() {
		tb.Helper()
		if repaired {
			return
		}
		repaired = true
		if err := os.Remove(snapshot); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s.bgsave(tb, "ok")
	}
	tb.Cleanup(func() {
		if s.Running() {
			repair()
		}
	})
	return repair
}

// bgsave runs BGSAVE and waits until it has ended with status ("ok" or
// "err"), as INFO persistence's rdb_last_bgsave_status says.
func (s *Server) bgsave(tb testing.TB, status string) {
	tb.Helper()
	if err := s.Do("BGSAVE").Error(); err != nil {
		tb.Fatalf("redistest: BGSAVE: %v", err)
	}
	deadline := time.Now().Add(ClusterTimeout)
	for {
		info, err := s.Do("INFO", "persistence").ToString()
		if err == nil && strings.Contains(info, "rdb_bgsave_in_progress:0\r\n") &&
			strings.Contains(info, "rdb_last_bgsave_status:"+status+"\r\n") {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: BGSAVE on port %d did not end with status %s within %v: %v\n%s", s.Port(), status, ClusterTimeout, err, info)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
