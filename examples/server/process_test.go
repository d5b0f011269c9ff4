package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fault tests run server processes made from this test binary: with
// childEnv set, TestMain runs main instead of the tests, so that a process
// runs exactly what the server command runs and can be killed like one.
const childEnv = "FLOWS_SERVER_TEST_CHILD"

// The tests that drive a browser or server processes, or start Redis
// servers, a Sentinel set, a cluster or PostgreSQL of their own, run in
// parallel (t.Parallel): they spend their time waiting on those. Tests
// that set environment variables (t.Setenv) or count goroutines stay
// serial; Go runs them first, before any parallel one starts.

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		exitWithParent()
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// exitWithParent ends a server process whose test binary has gone (a test
// that timed out, say), so that no server outlives its test.
func exitWithParent() {
	parent := os.Getppid()
	go func() {
		for {
			time.Sleep(200 * time.Millisecond)
			if os.Getppid() != parent {
				os.Exit(3)
			}
		}
	}()
}

// childEnviron is the environment of a server process: this one's without
// the variables that would choose a real model, a database, notifications
// or a listen address, plus env (KEY=value).
func childEnviron(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "GEMINI_"), strings.HasPrefix(name, "OPENAI_"),
			strings.HasPrefix(name, "OLLAMA_"), strings.HasPrefix(name, "TAVILY_"),
			strings.HasPrefix(name, "OTEL_"), strings.HasPrefix(name, "SMTP_"),
			strings.HasPrefix(name, "NOTIFY_"), strings.HasPrefix(name, "WEBHOOK_"),
			strings.HasPrefix(name, "FLOWS_"),
			name == "DATABASE_URL", name == "REDIS_URL", name == "ADDR", name == "PORT":
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, childEnv+"=1"), env...)
}

// serverProcess is a server process started by a test.
type serverProcess struct {
	t       *testing.T
	addr    string // the address it listens on
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // what Wait returned, once done is closed
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startServerProcess starts a server process on the Redis at redisURL,
// listening on addr, with args (flags), and kills it when the test ends if
// it is still running. It returns once the server answers GET /flows/.
func startServerProcess(t *testing.T, redisURL, addr string, args ...string) *serverProcess {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	logFile, err := os.CreateTemp(t.TempDir(), "server-*.log")
	require.NoError(t, err)
	cmd := exec.Command(exe, append([]string{"-addr", addr}, args...)...)
	cmd.Env = childEnviron("REDIS_URL=" + redisURL)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	p := &serverProcess{t: t, addr: addr, cmd: cmd, logPath: logFile.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log of server %d (%s):\n%s", p.pid(), strings.Join(args, " "), p.logTail(40))
		}
	})
	p.waitReady()
	return p
}

func (p *serverProcess) pid() int { return p.cmd.Process.Pid }

// url is the base URL of the server.
func (p *serverProcess) url() string { return "http://" + p.addr }

func (p *serverProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitReady waits until the server answers GET /flows/ with 200, failing
// the test if it exits first or takes longer than a minute.
func (p *serverProcess) waitReady() {
	p.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := client.Get(p.url() + "/flows/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.running() {
			p.t.Fatalf("server %d exited before it answered (%v); log:\n%s", p.pid(), p.err, p.logTail(40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("server %d did not answer GET /flows/ within a minute (last: %v); log:\n%s", p.pid(), err, p.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *serverProcess) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// terminate sends SIGTERM and returns the exit status, failing the test if
// the process does not exit within limit.
func (p *serverProcess) terminate(limit time.Duration) int {
	p.t.Helper()
	if p.running() {
		require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		p.kill()
		p.t.Fatalf("server %d did not exit within %v of SIGTERM; log:\n%s", p.pid(), limit, p.logTail(40))
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	assert.NoError(p.t, p.err)
	return 0
}

// logTail returns the last n lines of the process's log.
func (p *serverProcess) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// log returns the whole log of the process.
func (p *serverProcess) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return string(b)
}
