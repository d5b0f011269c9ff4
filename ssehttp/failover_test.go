package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// redisBroker returns a backend on srv with keys under prefix (the
// default for ""), closed when the test ends, and a Broker on it of a
// registry that has poem_flow.
func redisBroker(t *testing.T, srv *redistest.Server, prefix string) (*redisbackend.Backend, *registry.Registry, *queue.Broker) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	backend, err := redisbackend.New(srv.Client(t), redisbackend.Config{Prefix: prefix, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, backend.Close()) })
	reg := registry.New()
	reg.MustRegister("poem_flow", noopFlow())
	return backend, reg, queue.NewBroker(backend, backend, queue.BrokerConfig{Registry: reg, Logger: quiet})
}

// TestResumeAfterLossyFailover: a Redis failover lost the last event of
// a running task, which a client saw; the task's next events, on the new
// primary, take its position. The client's reconnection with the lost
// event's id neither skips those events nor gets 204 when the task ended
// there: it gets the task's events again from the first one, and the
// stream ends with the task. The failover is simulated on one
// redis-server: the task's keys are dumped as the replica has them and
// restored when it takes over.
func TestResumeAfterLossyFailover(t *testing.T) {
	srv := redistest.Start(t)
	const prefix = "lossy"
	backend, reg, broker := redisBroker(t, srv, prefix)
	quiet := slog.New(slog.DiscardHandler)
	server := httptest.NewServer(ssehttp.New(ssehttp.Config{Queue: broker, Progress: backend, Registry: reg, Logger: quiet}))
	t.Cleanup(server.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	appendStatus := func(id, status string) string {
		t.Helper()
		last, err := backend.Append(ctx, id, progress.Event{Type: progress.EventStatus, Status: status})
		require.NoError(t, err)
		return last
	}
	end := func(id string) {
		t.Helper()
		_, err := backend.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "done"})
		require.NoError(t, err)
	}
	// lostTask returns a task whose events "one" and "two" reached the
	// replica and whose events "lost" and "lost too", of one append, did
	// not, and the id of "lost too", once the replica has taken over. The
	// events that take their place are one per append: their ids differ
	// from "lost too"'s by position whatever the tags (the same once in
	// 36^4), so that the test is deterministic.
	lostTask := func() (id, lost string) {
		id, err := broker.Enqueue(ctx, "poem_flow", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		appendStatus(id, "one")
		appendStatus(id, "two")
		promote := srv.KeepKeys(t, prefix+":{"+id+"}:task", prefix+":{"+id+"}:events")
		lost, err = backend.Append(ctx, id, progress.Event{Type: progress.EventStatus, Status: "lost"},
			progress.Event{Type: progress.EventStatus, Status: "lost too"})
		require.NoError(t, err)
		promote()
		return id, lost
	}
	// resume reconnects with Last-Event-ID lastID and returns the answer's
	// status and the status line of each snapshot the stream carries.
	resume := func(id, lastID string) (int, []string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server.URL+"/task-status/"+id+"/", nil)
		require.NoError(t, err)
		req.Header.Set("Last-Event-ID", lastID)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var got []string
		r := sse.NewReader(resp.Body)
		for {
			m, err := r.Next()
			if errors.Is(err, io.EOF) {
				return resp.StatusCode, got
			}
			require.NoError(t, err)
			if m.HasData {
				var snap progress.Snapshot
				require.NoError(t, json.Unmarshal([]byte(m.Data), &snap))
				got = append(got, snap.Details.Status)
			}
		}
	}

	t.Run("the new events at the lost ids are not skipped", func(t *testing.T) {
		id, lost := lostTask()
		appendStatus(id, "three")
		appendStatus(id, "four")
		end(id)
		status, got := resume(id, lost)
		assert.Equal(t, http.StatusOK, status)
		assert.Equal(t, []string{"one", "two", "three", "four", "done"}, got)
	})

	t.Run("a malformed tagged id gets 400", func(t *testing.T) {
		id, _ := lostTask()
		for _, bad := range []string{"1-0-ABCD", "1-0-abc", "1-0-abcde", "0-0-abcd", "1-0-ab_d", "1-0-abcd-"} {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, server.URL+"/task-status/"+id+"/", nil)
			require.NoError(t, err)
			req.Header.Set("Last-Event-ID", bad)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, bad)
			assert.Equal(t, "malformed Last-Event-ID", errorOf(t, resp, body), bad)
		}
	})

	t.Run("a task that ended at the lost id is watched to its end", func(t *testing.T) {
		id, lost := lostTask()
		end(id)
		status, got := resume(id, lost)
		assert.Equal(t, http.StatusOK, status, "not 204: the client has not seen the end")
		assert.Equal(t, []string{"one", "two", "done"}, got)
	})
}
