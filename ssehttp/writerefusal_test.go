package ssehttp_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// TestWritesRefusedByRedis: while Redis refuses writes, for lack of
// memory (maxmemory reached, policy noeviction), of replicas in sync
// (min-replicas-to-write) or of a disk its snapshots can be saved on
// (its last save failed, stop-writes-on-bgsave-error yes), start-task
// and cancel-task answer 503 with Retry-After, as while Redis is down,
// and create nothing; a task's snapshot can still be read. Once Redis
// takes writes again, a start succeeds.
func TestWritesRefusedByRedis(t *testing.T) {
	t.Parallel()
	configRefusal := func(on, off [][]string) func(*testing.T, *redistest.Server) func() {
		return func(t *testing.T, srv *redistest.Server) func() {
			set := func(args [][]string) {
				for _, a := range args {
					require.NoError(t, srv.Do(append([]string{"CONFIG", "SET"}, a...)...).Error())
				}
			}
			set(on)
			t.Cleanup(func() { set(off) })
			return func() { set(off) }
		}
	}
	for _, refusal := range []struct {
		name string
		// refuse makes srv refuse writes, and returns the function that
		// lets them in again.
		refuse func(*testing.T, *redistest.Server) func()
	}{
		{"out of memory", configRefusal([][]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}}, [][]string{{"maxmemory", "0"}})},
		{"no replicas", configRefusal([][]string{{"min-replicas-to-write", "1"}}, [][]string{{"min-replicas-to-write", "0"}})},
		{"save failed", func(t *testing.T, srv *redistest.Server) func() { return srv.FailSaves(t) }},
	} {
		t.Run(refusal.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			b, err := redisbackend.New(srv.Client(t), redisbackend.Config{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, b.Close()) })
			reg := registry.New()
			reg.MustRegister("poem_flow", noopFlow())
			web := httptest.NewServer(ssehttp.New(ssehttp.Config{
				Queue: queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg}), Progress: b, Registry: reg,
				Retry: 2 * time.Second, Logger: slog.New(slog.DiscardHandler),
			}))
			t.Cleanup(web.Close)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			status, id, _ := postStart(t, web.URL, startReq{body: `{"flow": "poem_flow"}`})
			require.Equal(t, http.StatusOK, status, id)

			ended := queue.NewID()
			require.NoError(t, b.Create(ctx, ended))
			_, err = b.Append(ctx, ended, progress.LogEvent("step"), progress.Event{Type: progress.EventState, State: progress.StateSuccess})
			require.NoError(t, err)

			end := refusal.refuse(t, srv)

			status, msg, header := postStart(t, web.URL, startReq{body: `{"flow": "poem_flow"}`})
			assert.Equal(t, http.StatusServiceUnavailable, status, msg)
			assert.Equal(t, "2", header.Get("Retry-After"))

			req, err := http.NewRequestWithContext(ctx, http.MethodPost, web.URL+"/cancel-task/"+id+"/", nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "cancel-task")
			assert.Equal(t, "2", resp.Header.Get("Retry-After"))

			req, err = http.NewRequestWithContext(ctx, http.MethodGet, web.URL+"/tasks/"+id+"/", nil)
			require.NoError(t, err)
			resp, err = http.DefaultClient.Do(req)
			require.NoError(t, err)
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "the task can be read: %s", raw)
			var snap progress.Snapshot
			require.NoError(t, json.Unmarshal(raw, &snap))
			assert.Equal(t, progress.StatePending, snap.State, "not cancelled")
			stream := getStream(ctx, t, web.URL+"/task-status/"+ended+"/", "")
			assert.Equal(t, http.StatusOK, stream.status)
			assert.True(t, stream.hasData(), "the stream of an ended task: %+v", stream.messages)
			page, err := b.ListTasks(ctx, queue.ListOptions{Limit: queue.MaxListLimit})
			require.NoError(t, err)
			assert.Len(t, page.Tasks, 1, "the refused start created nothing: %v", page.Tasks)

			end()
			status, msg, _ = postStart(t, web.URL, startReq{body: `{"flow": "poem_flow"}`})
			assert.Equal(t, http.StatusOK, status, msg)
			assert.False(t, strings.Contains(msg, " "), "a task id: %q", msg)
		})
	}
}
