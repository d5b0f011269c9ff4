package ssehttp_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/ssehttp"
)

// TestStreamOfAnExpiringTask: a task's retention passes while a client
// watches it. The stream ends soon after (on Redis, though the backend's
// poll interval would not come for an hour), and the client's
// reconnection with its Last-Event-ID gets 404 "task not found", which
// stops an EventSource instead of having it reconnect forever.
func TestStreamOfAnExpiringTask(t *testing.T) {
	const retention = time.Second
	for _, kind := range []struct {
		name string
		make func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend))
	}{
		{"Memory", func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend)) {
			b, s := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{Retention: retention})
			return b, s, func(*testing.T) (queue.Backend, progress.Backend) { return b, s }
		}},
		{"Redis", func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend)) {
			srv := redistest.Start(t)
			b, err := redisbackend.New(srv.Client(t), redisbackend.Config{
				Retention: retention, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler),
			})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, b.Close()) })
			return b, b, func(*testing.T) (queue.Backend, progress.Backend) { return b, b }
		}},
	} {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, kind.make)
			base := s.serve(t, ssehttp.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			id, err := s.broker.Enqueue(ctx, "poem_flow", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			_, err = s.store.Append(ctx, id, progress.Event{Type: progress.EventStatus, Status: "waiting"})
			require.NoError(t, err)

			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/", nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			r := sse.NewReader(resp.Body)
			var last string
			var messages int
			for {
				f, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err, "the stream of the expired task did not end")
				if f.HasData {
					messages++
					last = f.ID
				}
			}
			assert.Equal(t, 1, messages, "the snapshot of the one event, then the end of the stream")
			require.NotEmpty(t, last)

			// What an EventSource does next: reconnect after the last id.
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/", nil)
			require.NoError(t, err)
			req.Header.Set("Last-Event-ID", last)
			again, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(again.Body)
			again.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusNotFound, again.StatusCode, "body: %s", body)
			assert.JSONEq(t, `{"error": "task not found"}`, string(body))
		})
	}
}
