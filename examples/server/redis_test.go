package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// redisConfig is testConfig on the Redis of srv (a server or a cluster),
// under a key prefix of the test's own.
func redisConfig(t *testing.T, srv interface{ URL() string }) config {
	t.Helper()
	var buf [6]byte
	_, err := rand.Read(buf[:])
	require.NoError(t, err)
	cfg := testConfig()
	cfg.RedisURL = srv.URL()
	cfg.Prefix = "t" + hex.EncodeToString(buf[:])
	cfg.Queue = "default"
	return cfg
}

func TestServerOnRedisRunsPoemFlowToSuccessOverSSE(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, srv)
	id := assertPoemOverSSE(t, startServer(t, cfg))

	// The task lives in Redis, under the configured prefix.
	n, err := srv.Do("EXISTS", cfg.Prefix+":{"+id+"}:task", cfg.Prefix+":{"+id+"}:events").AsInt64()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "the task and its events are not in Redis")
}

// TestServerWithoutWorkers runs the server with -workers 0: a task it
// accepts stays PENDING until a worker elsewhere, here one on a client of
// its own, runs it; the server's event stream follows the task to the end.
func TestServerWithoutWorkers(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, srv)
	cfg.Workers = 0
	web := startServer(t, cfg)
	id := startTask(t, web.Client(), web.URL, `{"flow": "poem_flow"}`)

	resp, err := http.Get(web.URL + "/task-status/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	var states []progress.State
	readSSE(t, resp.Body, func(m sse.Message) {
		if m.Event != "" {
			return
		}
		var s progress.Snapshot
		require.NoError(t, json.Unmarshal([]byte(m.Data), &s), m.Data)
		states = append(states, s.State)
		if len(states) > 1 {
			return
		}
		require.Equal(t, progress.StatePending, s.State, "first snapshot")
		// Give in-process workers, were there any, time to take it.
		time.Sleep(300 * time.Millisecond)
		assert.Equal(t, progress.StatePending, taskState(t, web.URL, id), "a server without workers ran the task")
		startSeparateWorker(t, cfg)
	})
	require.NotEmpty(t, states)
	assert.Equal(t, progress.StateSuccess, states[len(states)-1], "states seen: %v", states)
	assert.Contains(t, states, progress.StateProgress)
}

// TestServerOnCluster runs the server with -workers 0 on a Redis Cluster
// of three masters, named by REDIS_URL's address list, and a worker on a
// client of its own: poem_flow runs to SUCCESS over SSE, and its keys are
// on the master of its slot.
func TestServerOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	cfg := redisConfig(t, c)
	cfg.Workers = 0
	web := startServer(t, cfg)
	startSeparateWorker(t, cfg)
	id := assertPoemOverSSE(t, web)

	client := c.Client(t)
	n, err := client.Do(context.Background(), client.B().Exists().Key(cfg.Prefix+":{"+id+"}:task", cfg.Prefix+":{"+id+"}:events").Build()).AsInt64()
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "the task and its events are in the cluster")
}

// TestServerThroughSentinel runs the server in durable mode on a primary
// found through three sentinels (REDIS_URL names them and the master
// set): poem_flow runs to SUCCESS over SSE, and the task is on the replica.
func TestServerThroughSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	cfg := redisConfig(t, s)
	cfg.WaitReplicas = 1
	id := assertPoemOverSSE(t, startServer(t, cfg))

	replica := s.Data[1]
	n, err := redisproc.Do(replica.Addr(), "EXISTS", cfg.Prefix+":{"+id+"}:task")
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "the task is on the replica")
}

// taskState returns the state of the task from GET /tasks/{id}/.
func taskState(t *testing.T, baseURL, id string) progress.State {
	t.Helper()
	resp, err := http.Get(baseURL + "/tasks/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		State progress.State `json:"state"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return body.State
}

// startSeparateWorker runs a worker for the example flows on the Redis of
// cfg with a client of its own, as a worker process would, until the test
// ends.
func startSeparateWorker(t *testing.T, cfg config) {
	t.Helper()
	opt, err := rueidis.ParseURL(cfg.RedisURL)
	require.NoError(t, err)
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	backend, err := redisbackend.New(client, redisbackend.Config{Prefix: cfg.Prefix, Queue: cfg.Queue, Logger: logger})
	require.NoError(t, err)
	reg := registry.New()
	require.NoError(t, exampleflows.RegisterWith(reg, cfg.Flows))
	worker := queue.NewWorker(backend, backend, queue.WorkerConfig{Registry: reg, Concurrency: 2, Logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		assert.NoError(t, backend.Close())
		client.Close()
	})
}

func TestServerFailsWhenRedisIsUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	cfg := testConfig()
	cfg.RedisURL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
	cfg.Queue, cfg.Prefix = "default", "flows"
	_, _, err = newServer(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connect to Redis at 127.0.0.1:"+strconv.Itoa(port))
}

// TestServerServesTheOperatorsRoutes checks that the demo server mounts
// the operators' routes, in memory and on Redis: a finished task is
// listed and counted.
func TestServerServesTheOperatorsRoutes(t *testing.T) {
	for name, cfg := range map[string]func() config{
		"memory": testConfig,
		"redis":  func() config { return redisConfig(t, redistest.Start(t)) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := startServer(t, cfg())
			id := assertPoemOverSSE(t, srv)
			var page struct {
				Tasks []struct {
					TaskID string `json:"task_id"`
					State  string `json:"state"`
				} `json:"tasks"`
			}
			getJSON(t, srv.URL+"/tasks/?state=SUCCESS", &page)
			require.Len(t, page.Tasks, 1)
			assert.Equal(t, id, page.Tasks[0].TaskID)
			var st struct {
				Counts  map[string]int `json:"counts"`
				Workers []struct {
					Alive bool `json:"alive"`
				} `json:"workers"`
			}
			getJSON(t, srv.URL+"/stats/", &st)
			assert.Equal(t, 1, st.Counts["SUCCESS"])
			require.Len(t, st.Workers, 1, "the server's in-process worker")
			assert.True(t, st.Workers[0].Alive)
		})
	}
}

// getJSON gets url, which must answer 200, and decodes its JSON into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}
