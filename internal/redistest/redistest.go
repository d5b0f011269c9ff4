// Package redistest starts throwaway redis-server processes for tests.
//
// Every Redis-specific test of the module runs against a real server
// started here, on a free port (never 6379) in a temporary directory, and
// stopped when the test ends:
//
//	srv := redistest.Start(t)
//	client := srv.Client(t)
//
// A machine without redis-server makes the test fail with a message on how
// to install it; such tests never skip.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// InstallHint is the message of the failure reported when redis-server is
// not on PATH.
const InstallHint = "redis-server not found: install it with `apt-get install redis-server` (Debian) or `brew install redis`"

// reservedPort is the port of a developer's own Redis, which tests never
// touch.
const reservedPort = 6379

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 15 * time.Second

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

// Server is a redis-server process owned by one test.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	args []string

	mu    sync.Mutex
	proc  *exec.Cmd
	done  chan struct{} // closed when proc has exited
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
	bin, err := findServer()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.cleanup)

	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: find a free port: %v", err)
		}
		s.port = port
		s.args = buildArgs(port, s.dir, opts)
		if lastErr = s.launch(); lastErr == nil {
			return s
		}
		// Another process may have taken the port between our probe and
		// the server's bind: try another one.
	}
	tb.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

func findServer() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New(InstallHint)
	}
	return bin, nil
}

func buildArgs(port int, dir string, opts Options) []string {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--logfile", "redis.log",
		"--daemonize", "no",
		"--save", "",
	}
	if opts.AppendOnly {
		fsync := opts.AppendFsync
		if fsync == "" {
			fsync = "everysec"
		}
		args = append(args, "--appendonly", "yes", "--appendfsync", fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, opts.Args...)
}

// freePort asks the kernel for a free port on the loopback interface,
// avoiding the port of a developer's own Redis.
func freePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, err
		}
		if port != reservedPort {
			return port, nil
		}
	}
}

// launch starts the process on s.port and waits for PING.
func (s *Server) launch() error {
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.proc, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.Addr())
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited at start (port %d): %s", s.port, s.logTail(10))
		default:
		}
		if time.Now().After(deadline) {
			s.signal(true)
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %w", s.port, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends one inline PING and expects +PONG (a server still loading its
// append-only file answers -LOADING, which counts as not ready).
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the server's address as a redis:// URL, the form REDIS_URL
// takes.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory, where its append-only file
// and its log (redis.log) live.
func (s *Server) Dir() string { return s.dir }

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
	c, err := rueidis.NewClient(s.ClientOption())
	if err != nil {
		tb.Fatalf("redistest: connect to %s: %v", s.Addr(), err)
	}
	tb.Cleanup(c.Close)
	return c
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
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Stop shuts the server down gracefully (SIGTERM: an append-only file is
// flushed) and waits for it to exit. Stopping a stopped server does
// nothing.
func (s *Server) Stop() { s.stop(false) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. Writes not yet fsynced to the append-only file are lost.
func (s *Server) Kill() { s.stop(true) }

func (s *Server) stop(kill bool) {
	s.tb.Helper()
	if !s.signal(kill) {
		return
	}
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(startTimeout):
		s.signal(true)
		<-done
	}
}

// signal sends SIGTERM (or SIGKILL) to a running process and reports
// whether there was one.
func (s *Server) signal(kill bool) bool {
	s.mu.Lock()
	proc, done := s.proc, s.done
	s.mu.Unlock()
	if proc == nil || proc.Process == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
	}
	if kill {
		_ = proc.Process.Kill()
	} else {
		_ = proc.Process.Signal(terminateSignal)
	}
	return true
}

// Restart stops the server if it is running and starts it again on the
// same port and in the same directory, so that an append-only file is
// replayed. It fails the test if the server cannot come back.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var err error
	for range 50 {
		if err = s.launch(); err == nil {
			return
		}
		// The old socket may linger or another process may hold the port
		// for a moment: try again shortly.
		time.Sleep(100 * time.Millisecond)
	}
	s.tb.Fatalf("redistest: restart redis-server on port %d: %v", s.port, err)
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
		s.tb.Logf("redistest: last lines of the log of redis-server on port %d:\n%s", s.port, s.logTail(20))
	}
}

// logTail returns the last n lines of the server's log.
func (s *Server) logTail(n int) string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
