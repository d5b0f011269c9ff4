//go:build unix

package redisbackend_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// freeze stops the redis-server process (SIGSTOP) until the returned
// function resumes it: its connections stay open and nothing is answered,
// as with a server stuck or a network that drops packets.
func freeze(t *testing.T, srv *redistest.Server) (resume func()) {
	t.Helper()
	info, err := srv.Do("INFO", "server").ToString()
	require.NoError(t, err)
	pid := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
	}
	require.Positive(t, pid, "process_id in INFO server")
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			assert.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
		}
	}
	t.Cleanup(resume)
	return resume
}

func TestOpTimeoutWhileRedisHangs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// The task is set up with the default bound, so that a slow machine
	// does not fail the setup; b, on the same keys, has a short one.
	setup := newBackend(t, newClient(t, srv), redisbackend.Config{})
	held := leaseOne(t, setup)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: setup.Prefix(), OpTimeout: 50 * time.Millisecond})

	// Without a bound, every call would wait for as long as Redis hangs.
	resume := freeze(t, srv)
	for _, tt := range operations(b, held) {
		t.Run(tt.name, func(t *testing.T) { requireUnavailable(t, tt.op) })
	}
	t.Run("HTTP", func(t *testing.T) {
		reg := registry.New()
		reg.MustRegister("poem", flow.Func(func(context.Context, *flow.Task) (any, error) { return "a poem", nil }))
		web := serve(t, ssehttp.New(ssehttp.Config{
			Queue: queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg}), Progress: b, Registry: reg, Logger: quiet,
		}))
		client := &http.Client{Timeout: waitLimit} // a guard against hanging, not a measure
		for _, req := range []struct {
			method, path, body string
			status             int
		}{
			{http.MethodPost, "/start-task/", `{"flow":"poem"}`, http.StatusServiceUnavailable},
			{http.MethodGet, "/tasks/" + held.Task.ID + "/", "", http.StatusServiceUnavailable},
			// A stream is told when to come back, in a form an
			// EventSource follows.
			{http.MethodGet, "/task-status/" + held.Task.ID + "/", "", http.StatusOK},
		} {
			r, err := http.NewRequest(req.method, web.URL+req.path, strings.NewReader(req.body))
			require.NoError(t, err)
			r.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(r)
			require.NoError(t, err, "%s %s", req.method, req.path)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, req.status, resp.StatusCode, "%s %s: %s", req.method, req.path, body)
			if req.status == http.StatusOK {
				assert.Contains(t, string(body), "\nretry: ", "%s %s", req.method, req.path)
			}
		}
	})
	resume()
	eventually(t, func() bool {
		_, _, err := b.Snapshot(context.Background(), held.Task.ID)
		return err == nil
	}, "Redis answers again once it resumes")
}
