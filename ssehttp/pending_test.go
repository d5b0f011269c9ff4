package ssehttp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// TestStreamShowsWhatAPendingTaskWaitsFor checks that the stream of a
// task that waits for a slot of its flow (registry.Concurrency) opens with
// the status line the task's snapshot holds, as GET /tasks/{id}/ shows it,
// in both stream modes and on both backends: on Redis that line is in the
// task's record, with no event behind it.
func TestStreamShowsWhatAPendingTaskWaitsFor(t *testing.T) {
	onEachBackend(t, func(t *testing.T, s *site) {
		s.reg.MustRegister("limited_flow", noopFlow(), registry.Concurrency(1))
		base := s.serve(t, ssehttp.Config{})
		status, id, _ := postStart(t, base, startReq{body: `{"flow":"limited_flow"}`})
		require.Equal(t, http.StatusOK, status, id)
		const want = "waiting for a slot of flow limited_flow (at most 1 at once)"

		resp, err := http.Get(base + "/tasks/" + id + "/")
		require.NoError(t, err)
		var task struct {
			State   string `json:"state"`
			Details struct {
				Status string `json:"status"`
			} `json:"details"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&task))
		resp.Body.Close()
		require.Equal(t, "PENDING", task.State)
		require.Equal(t, want, task.Details.Status, "the snapshot says what the task waits for")

		for _, mode := range []string{"", "?mode=updates"} {
			t.Run("mode="+mode, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/"+mode, nil)
				require.NoError(t, err)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				require.Equal(t, http.StatusOK, resp.StatusCode)
				// The status line the client holds after the first message,
				// and after the second if the first is an update stream's
				// opening snapshot from before the task's first event.
				r := sse.NewReader(resp.Body)
				next := func() (event string, data struct {
					State   string `json:"state"`
					Status  string `json:"status"`
					Details struct {
						Status string `json:"status"`
					} `json:"details"`
				}) {
					t.Helper()
					for {
						m, err := r.Next()
						require.NoError(t, err)
						if m.HasData {
							require.NoError(t, json.Unmarshal([]byte(m.Data), &data), "%s", m.Data)
							return m.Event, data
						}
					}
				}
				event, first := next()
				assert.Equal(t, "PENDING", first.State)
				got := first.Details.Status
				if event == "snapshot" && got != want {
					event, second := next()
					require.Equal(t, "update", event)
					got = second.Status
				}
				assert.Equal(t, want, got)
			})
		}
	})
}
