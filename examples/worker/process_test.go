package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// The process tests run worker processes made from this test binary: with
// childEnv set, TestMain runs the worker's command instead of the tests,
// with one more flow, sleep_flow, that exists only here. No separate build
// is needed, and the worker runs exactly the code that main runs.
const childEnv = "FLOWS_WORKER_TEST_CHILD"

// The process tests run in parallel (t.Parallel): each starts its own
// redis-server (or cluster, or Sentinel set), queue, witness and worker
// processes, and they spend their time waiting on those processes, on
// heartbeats and on leases, not on the CPU.

// sleepFlowName is the test-only flow of the worker processes.
const sleepFlowName = "sleep_flow"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		exitWithParent()
		os.Exit(command(os.Args[1:], os.Getenv, os.Stderr, registerTestFlows, os.Interrupt, syscall.SIGTERM))
	}
	os.Exit(m.Run())
}

// exitWithParent ends a worker process whose test binary has gone (a test
// that timed out, say), so that no worker outlives its test.
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

// openAIEnv, set to 1 in the environment of a worker process, has its
// example flows use the model that OPENAI_API_KEY, OPENAI_BASE_URL and
// OPENAI_MODEL name (a test's OpenAI-compatible server) in place of the
// offline one; everything else stays offline.
const openAIEnv = "FLOWS_WORKER_TEST_OPENAI"

// registerTestFlows adds the example flows, offline whatever the
// environment says (but see openAIEnv), and sleep_flow.
func registerTestFlows(reg *registry.Registry) error {
	cfg := offlineFlows(exampleflows.Config{})
	if os.Getenv(openAIEnv) == "1" {
		cfg.Getenv = func(key string) string {
			if strings.HasPrefix(key, "OPENAI_") {
				return os.Getenv(key)
			}
			return ""
		}
	}
	if err := exampleflows.RegisterWith(reg, cfg); err != nil {
		return err
	}
	if err := reg.Register(witnessFlowName, witnessFlow, registry.Description("test only: calls a witness while it runs")); err != nil {
		return err
	}
	if err := reg.Register(limitFlowName, limitFlow, registry.Description("test only: tells a counter while it runs"),
		registry.Concurrency(limitFlowSlots)); err != nil {
		return err
	}
	return reg.Register(sleepFlowName, sleepFlow, registry.Description("test only: sleeps for the given time"))
}

// offlineFlows is cfg with an empty environment, so that the example
// flows use the offline model and search even where API keys are set.
func offlineFlows(cfg exampleflows.Config) exampleflows.Config {
	cfg.Getenv = func(string) string { return "" }
	return cfg
}

// sleepInput is the input of sleep_flow.
type sleepInput struct {
	MS int `json:"ms"`
}

// sleepResult is the final result of sleep_flow: which process ran the
// successful attempt.
type sleepResult struct {
	PID     int `json:"pid"`
	Attempt int `json:"attempt"`
	SleptMS int `json:"slept_ms"`
}

// sleepFlow stands for a flow that waits on a model: it reports once, then
// sleeps for in.MS milliseconds or until its context ends.
var sleepFlow = flow.Typed(func(ctx context.Context, in sleepInput, t *flow.Task) (sleepResult, error) {
	t.Progress.Progress(10, "sleeping")
	timer := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return sleepResult{PID: os.Getpid(), Attempt: t.Attempt, SleptMS: in.MS}, nil
	case <-ctx.Done():
		return sleepResult{}, ctx.Err()
	}
})

// workerProcess is a worker process started by a test.
type workerProcess struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // what Wait returned, once done is closed
}

// startWorker starts a worker process on the Redis at redisURL with args,
// and kills it when the test ends if it is still running.
func startWorker(t *testing.T, redisURL string, args ...string) *workerProcess {
	t.Helper()
	return startWorkerEnv(t, redisURL, nil, args...)
}

// startWorkerEnv is startWorker with env (KEY=value) added to the
// process's environment.
func startWorkerEnv(t *testing.T, redisURL string, env []string, args ...string) *workerProcess {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	logFile, err := os.CreateTemp(t.TempDir(), "worker-*.log")
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "REDIS_URL="+redisURL), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	p := &workerProcess{t: t, cmd: cmd, logPath: logFile.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log of worker %d:\n%s", p.pid(), p.logTail(30))
		}
	})
	return p
}

func (p *workerProcess) pid() int { return p.cmd.Process.Pid }

func (p *workerProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *workerProcess) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// terminate sends SIGTERM and returns the exit status, failing the test if
// the process does not exit within limit.
func (p *workerProcess) terminate(limit time.Duration) int {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(limit):
		p.kill()
		p.t.Fatalf("worker %d did not exit within %v of SIGTERM; log:\n%s", p.pid(), limit, p.logTail(30))
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	require.NoError(p.t, p.err)
	return 0
}

func (p *workerProcess) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// testQueue is a queue and prefix of their own for one test, on one
// Redis (or cluster), with a backend the test enqueues and checks through.
type testQueue struct {
	prefix string
	name   string
	b      *redisbackend.Backend
	broker *queue.Broker
}

// newTestQueue returns a testQueue on srv: a *redistest.Server, Cluster
// or Sentinel.
func newTestQueue(t *testing.T, srv interface{ ClientOption() rueidis.ClientOption }) *testQueue {
	t.Helper()
	var buf [6]byte
	_, err := rand.Read(buf[:])
	require.NoError(t, err)
	q := &testQueue{prefix: "t" + hex.EncodeToString(buf[:]), name: "q" + hex.EncodeToString(buf[:3])}
	client, err := rueidis.NewClient(srv.ClientOption())
	require.NoError(t, err)
	t.Cleanup(client.Close)
	q.b, err = redisbackend.New(client, redisbackend.Config{Prefix: q.prefix, Queue: q.name, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, q.b.Close()) })
	// Enough attempts that no task runs out of them however often its
	// worker is killed.
	flows := registry.New()
	require.NoError(t, registerTestFlows(flows), "the flows the worker processes run")
	q.broker = queue.NewBroker(q.b, q.b, queue.BrokerConfig{Registry: flows, MaxAttempts: 50})
	return q
}

// workerArgs are the flags that point a worker process at q.
func (q *testQueue) workerArgs(extra ...string) []string {
	return append([]string{"-queue", q.name, "-prefix", q.prefix}, extra...)
}

// enqueueSleeps enqueues one sleep_flow task for each duration, from a few
// goroutines, and returns their ids in the same order.
func (q *testQueue) enqueueSleeps(t *testing.T, ms []int) []string {
	t.Helper()
	ids := make([]string, len(ms))
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	const senders = 8
	for s := range senders {
		wg.Go(func() {
			for i := s; i < len(ms); i += senders {
				inputs, _ := json.Marshal(sleepInput{MS: ms[i]})
				ids[i], errs[i] = q.broker.Enqueue(context.Background(), sleepFlowName, inputs, queue.EnqueueOptions{})
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	return ids
}

// unfinished returns those of ids whose task has not reached a terminal
// state, reading their snapshots from a few goroutines.
func (q *testQueue) unfinished(t *testing.T, ids []string) []string {
	t.Helper()
	done := make([]bool, len(ids))
	var wg sync.WaitGroup
	const readers = 8
	for r := range readers {
		wg.Go(func() {
			for i := r; i < len(ids); i += readers {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				snap, _, err := q.b.Snapshot(ctx, ids[i])
				cancel()
				done[i] = err == nil && snap.State.Terminal()
			}
		})
	}
	wg.Wait()
	var rest []string
	for i, id := range ids {
		if !done[i] {
			rest = append(rest, id)
		}
	}
	return rest
}

// waitFinished waits until every task of ids has reached a terminal state,
// calling tick between checks, and fails the test with the ids still
// unfinished if that takes longer than limit.
func (q *testQueue) waitFinished(t *testing.T, ids []string, limit time.Duration, tick func(remaining int)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	rest := ids
	for {
		rest = q.unfinished(t, rest)
		if len(rest) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks did not finish within %v: %s", len(rest), len(ids), limit, q.describe(t, rest[:min(len(rest), 10)]))
		}
		if tick != nil {
			tick(len(rest))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitRunning waits until every task of ids is running (PROGRESS).
func (q *testQueue) waitRunning(t *testing.T, ids []string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		running := 0
		for _, id := range ids {
			snap, _, err := q.b.Snapshot(context.Background(), id)
			require.NoError(t, err)
			require.False(t, snap.State.Terminal(), "task %s ended before the test was ready: %s", id, snap.Details.Status)
			if snap.State == progress.StateProgress {
				running++
			}
		}
		if running == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tasks started within %v: %s", running, len(ids), limit, q.describe(t, ids))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// describe lists the state, status and attempt of the tasks, for failure
// messages.
func (q *testQueue) describe(t *testing.T, ids []string) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		info, err := q.broker.Task(context.Background(), id)
		if err != nil {
			fmt.Fprintf(&b, "\n  %s: %v", id, err)
			continue
		}
		attempt := -1
		if info.Task != nil {
			attempt = info.Task.Attempt
		}
		fmt.Fprintf(&b, "\n  %s: %s %q attempt %d", id, info.Snapshot.State, info.Snapshot.Details.Status, attempt)
	}
	return b.String()
}

// outcome is what a finished task's progress and queue record say about
// its runs.
type outcome struct {
	// Attempt is the number of times the task was leased.
	Attempt int
	// Starts is the number of runs that reached the flow (state PROGRESS
	// "Running" events).
	Starts int
	// Result is the final result of its successful run, for a task of
	// sleep_flow.
	Result sleepResult
}

// checkSucceededOnce asserts that the task ended SUCCESS, once: its
// snapshot says so and its event log holds exactly one terminal event, the
// last one. It returns what its records say about its runs.
func (q *testQueue) checkSucceededOnce(t *testing.T, id string) outcome {
	t.Helper()
	ctx := context.Background()
	info, err := q.broker.Task(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, info.Task, "task %s has no queue record", id)
	assert.Equal(t, progress.StateSuccess, info.Snapshot.State, "task %s: %s", id, info.Snapshot.Details.Status)
	events, err := q.b.Events(ctx, id, "")
	require.NoError(t, err)
	require.NotEmpty(t, events, "task %s has no events", id)
	out := outcome{Attempt: info.Task.Attempt}
	terminal := 0
	for _, e := range events {
		if e.Terminal() {
			terminal++
		}
		if e.Type == progress.EventState && e.State == progress.StateProgress {
			out.Starts++
		}
	}
	assert.Equal(t, 1, terminal, "task %s: terminal events", id)
	last := events[len(events)-1]
	assert.True(t, last.Terminal(), "task %s: the last event is not terminal: %+v", id, last)
	if last.State == progress.StateSuccess && info.Task.Flow == sleepFlowName {
		assert.NoError(t, json.Unmarshal(last.Result, &out.Result), "task %s: result %s", id, last.Result)
	}
	return out
}
