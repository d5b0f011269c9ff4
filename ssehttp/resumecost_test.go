package ssehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// redisOutput returns the bytes Redis has sent to its clients since the
// last call (INFO stats total_net_output_bytes, after CONFIG RESETSTAT),
// less the reply to the reset itself.
func redisOutput(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info, err := srv.Do("INFO", "stats").ToString()
	require.NoError(t, err)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n - len("+OK\r\n")
		}
	}
	require.FailNow(t, "no total_net_output_bytes in INFO stats", info)
	return 0
}

// TestResumeCostOnRedis checks that reconnecting to the event stream of a
// task with a large event log does not make Redis send the whole log: a
// client at the terminal event gets 204 for a few hundred bytes of Redis
// output, and a client at the last event of a running task costs Redis
// the task's snapshot, not its log. It measures Redis's own output (INFO
// stats), with and without Config.Identify.
func TestResumeCostOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	backend, reg, broker := redisBroker(t, srv, "")
	quiet := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	// Two tasks whose logs hold 1.2 MB: 150 tokens of 4 KB, then 150
	// steps of 4 KB (600 KB of snapshot) and a status. One has ended
	// since.
	chunk := strings.Repeat("x", 4000)
	bigTask := func() (id, last string) {
		id, err := broker.Enqueue(ctx, "poem_flow", json.RawMessage(`{}`), queue.EnqueueOptions{Owner: "alice"})
		require.NoError(t, err)
		for range 150 {
			_, err := backend.Append(ctx, id, progress.Event{Type: progress.EventToken, Token: chunk})
			require.NoError(t, err)
		}
		for range 150 {
			_, err := backend.Append(ctx, id, progress.Event{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepLog, Message: chunk}})
			require.NoError(t, err)
		}
		last, err = backend.Append(ctx, id, progress.Event{Type: progress.EventStatus, Status: "Finishing"})
		require.NoError(t, err)
		return id, last
	}
	ended, beforeEnd := bigTask()
	end, err := backend.Append(ctx, ended, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)})
	require.NoError(t, err)
	running, runningLast := bigTask()

	for _, tc := range []struct {
		name     string
		identify bool
	}{{"open", false}, {"Identify", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ssehttp.Config{Queue: broker, Progress: backend, Registry: reg, Logger: quiet}
			if tc.identify {
				cfg.Identify = bearerIdentify
			}
			hs := httptest.NewServer(ssehttp.New(cfg))
			t.Cleanup(hs.Close)
			// resume reconnects to the stream of task id after lastID and
			// reads the answer until it ends, or, with a mode, up to the
			// end of the opening snapshot. It returns the status, what it
			// read, and Redis's output meanwhile.
			resume := func(t *testing.T, id, lastID, mode string) (int, string, int) {
				t.Helper()
				rctx, cancel := context.WithTimeout(ctx, testTimeout)
				defer cancel()
				req, err := http.NewRequestWithContext(rctx, http.MethodGet, hs.URL+"/task-status/"+id+"/"+mode, nil)
				require.NoError(t, err)
				req.Header.Set("Last-Event-ID", lastID)
				req.Header.Set("Authorization", "Bearer alice")
				redisOutput(t, srv)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				var body []byte
				if mode == "" {
					body, err = io.ReadAll(resp.Body)
					require.NoError(t, err)
				} else {
					text := bufio.NewReader(resp.Body)
					for !strings.Contains(string(body), "event: snapshot\n") || !strings.HasSuffix(string(body), "\n\n") {
						line, err := text.ReadString('\n')
						require.NoError(t, err, "read so far: %.200s", body)
						body = append(body, line...)
					}
				}
				require.NoError(t, resp.Body.Close())
				return resp.StatusCode, string(body), redisOutput(t, srv)
			}

			status, body, out := resume(t, ended, end, "")
			t.Logf("resume at the terminal event: %d bytes of Redis output", out)
			assert.Equal(t, http.StatusNoContent, status)
			assert.Empty(t, body)
			assert.Less(t, out, 4096, "Redis output for a resume at the end")

			status, body, out = resume(t, running, runningLast, "?mode=updates")
			t.Logf("resume at the last event of a running task: %d bytes of Redis output", out)
			assert.Equal(t, http.StatusOK, status)
			assert.Contains(t, body, "id: "+runningLast+"\nevent: snapshot\n")
			assert.Contains(t, body, `"status":"Finishing"`)
			assert.Equal(t, 150, strings.Count(body, `"type":"log"`))
			// The 600 KB of steps, not the 1.2 MB of events.
			assert.Less(t, out, 700_000, "Redis output for a resume at the last event")

			status, body, out = resume(t, ended, beforeEnd, "")
			t.Logf("resume one event before the end: %d bytes of Redis output", out)
			assert.Equal(t, http.StatusOK, status)
			assert.Contains(t, body, "id: "+end+"\n")
			assert.Contains(t, body, `"state":"SUCCESS"`)
			assert.NotContains(t, body, "id: "+beforeEnd+"\n")
		})
	}
}
