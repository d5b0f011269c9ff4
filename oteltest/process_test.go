package oteltest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// The environment of a child process that runs a worker instead of the
// tests (see TestMain): the Redis URL, the file to write the spans to,
// and how many run spans to wait for.
const (
	envRedis = "FLOWS_OTELTEST_WORKER_REDIS"
	envSpans = "FLOWS_OTELTEST_WORKER_SPANS"
	envRuns  = "FLOWS_OTELTEST_WORKER_RUNS"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(envRedis); url != "" {
		if err := runChildWorker(url, os.Getenv(envSpans), os.Getenv(envRuns)); err != nil {
			fmt.Fprintln(os.Stderr, "child worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChildWorker runs a traced worker on the Redis at url until it has
// ended runs run spans, then writes every span it recorded to path.
func runChildWorker(url, path, runs string) error {
	want, err := strconv.Atoi(runs)
	if err != nil {
		return err
	}
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return err
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	defer client.Close()
	backend, err := redisbackend.New(client, redisbackend.Config{})
	if err != nil {
		return err
	}
	tp, rec := newChildTracer()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	w := queue.NewWorker(backend, nil, queue.WorkerConfig{
		Registry: newRegistry(), TracerProvider: tp, Backoff: func(int) time.Duration { return 0 },
	})
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	for ctx.Err() == nil {
		n := 0
		for _, s := range rec.Ended() {
			if s.Name() == "flows.run" {
				n++
			}
		}
		if n >= want {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done
	b, err := json.Marshal(readSpans(rec.Ended()))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// TestTraceAcrossProcesses: a task started over HTTP in this process and
// run by a worker in another, through Redis, is one trace: the worker's
// run spans are children of this process's enqueue span.
func TestTraceAcrossProcesses(t *testing.T) {
	srv := redistest.Start(t)
	tp, rec := newTracer(t)
	b := newRedisBackend(t, srv)
	s := newStack(t, b, b, nil, providers{tp: tp}, true)

	exe, err := os.Executable()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "spans.json")
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRedis+"="+srv.URL(), envSpans+"="+path, envRuns+"=2")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	id := s.start(t, flaky, `{}`)
	require.NoError(t, cmd.Wait(), "the child worker")
	assert.Equal(t, "SUCCESS", string(s.wait(t, id)))

	var child []span
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &child))

	st := spanTree(readSpans(rec.Ended()))
	enq := st.of("flows.enqueue", keyTask, id)
	require.Len(t, enq, 1)
	runs := spanTree(child).of("flows.run", keyTask, id)
	require.Len(t, runs, 2, "two attempts in the child: %+v", child)
	for _, r := range runs {
		assert.Equal(t, enq[0].TraceID, r.TraceID, "one trace across the processes")
		assert.Equal(t, enq[0].SpanID, r.ParentID, "the run is a child of the enqueue")
	}
}
