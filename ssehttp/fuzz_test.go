package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// acceptingQueue accepts every task without running it.
type acceptingQueue struct{}

func (acceptingQueue) Enqueue(context.Context, string, json.RawMessage, queue.EnqueueOptions) (string, error) {
	return queue.NewID(), nil
}

func (acceptingQueue) Cancel(context.Context, string) error { return nil }

// FuzzStartTaskBody sends arbitrary bodies to start-task: the handler never
// panics and always answers 200 with a task id or a JSON error with a
// status of the contract.
func FuzzStartTaskBody(f *testing.F) {
	for _, seed := range []string{
		`{"flow":"poem_flow","inputs":{}}`,
		`{"flow":"web_search_flow","inputs":{"question":"why"}}`,
		`{"flow":"web_search_flow","inputs":{"question":["why"]}}`,
		`{"flow":"web_search_flow","inputs":null}`,
		`{"flow":"poem_flow","inputs":"x"}`,
		`{"flow":1}`, `{"flow":"nope"}`, `{}`, `[]`, `null`, ``, `{"flow":"poem_flow"} {}`,
		"{\"flow\":\"poem_\xffflow\"}", `{"flow":"poem_flow","inputs":{"a":{"b":[1,2,{"c":null}]}}}`,
	} {
		f.Add(seed)
	}
	h := ssehttp.New(ssehttp.Config{
		Queue:        acceptingQueue{},
		Progress:     progress.NewMemoryStore(progress.MemoryConfig{}),
		Registry:     testRegistry(0, nil, nil),
		MaxBodyBytes: 4 << 10,
	})
	allowed := []int{http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/start-task/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp := rec.Result()
		require.Contains(t, allowed, resp.StatusCode, "body %q: %s", body, rec.Body)
		if resp.StatusCode == http.StatusOK {
			var out map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
			require.True(t, queue.ValidID(out["task_id"]), "answer %s", rec.Body)
			return
		}
		errorOf(t, resp, rec.Body.Bytes())
	})
}

// recordedStream reads a whole event stream from a recorder.
func recordedStream(t testing.TB, rec *httptest.ResponseRecorder) []message {
	t.Helper()
	stream := sse.NewReader(rec.Body)
	var out []message
	for {
		f, err := stream.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if f.HasData {
			out = append(out, message{ID: f.ID, Event: f.Event, Data: f.Data})
		}
	}
}

// FuzzLastEventID resumes a finished task's stream after arbitrary ids,
// in the header or the query, in either mode: the answer is a 400 JSON
// error, a 204 after the terminal event, or exactly the events after the
// id (all of them for an id the task never issued); an update stream
// opens with a snapshot message carrying the id it resumed after.
func FuzzLastEventID(f *testing.F) {
	for _, seed := range []string{"", "0", "1", "2", "5", "6", "99", "01", " 1", "-1", "abc", "1\n", "18446744073709551616", "\x00"} {
		f.Add(seed, false, false)
		f.Add(seed, true, false)
		f.Add(seed, false, true)
	}
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	ctx := context.Background()
	id := queue.NewID()
	require.NoError(f, store.Create(ctx, id))
	_, err := store.Append(ctx, id,
		progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"},
		progress.LogEvent("one"),
		progress.Event{Type: progress.EventToken, Token: "to"},
		progress.ToolResultEvent("s", "t", map[string]int{"n": 1}),
		progress.Event{Type: progress.EventProgress, Progress: 70, Status: "nearly"},
		progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)},
	)
	require.NoError(f, err)
	h := ssehttp.New(ssehttp.Config{Queue: acceptingQueue{}, Progress: store})

	serve := func(lastID string, viaQuery, updates bool) *httptest.ResponseRecorder {
		q := url.Values{}
		if viaQuery {
			q.Set("lastEventId", lastID)
		}
		if updates {
			q.Set("mode", "updates")
		}
		target := "/task-status/" + id + "/"
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
		req := httptest.NewRequest(http.MethodGet, target, nil)
		if !viaQuery {
			req.Header.Set("Last-Event-ID", lastID)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	rec := serve("", false, false)
	require.Equal(f, http.StatusOK, rec.Code)
	full := recordedStream(f, rec)
	require.Len(f, full, 6)
	rec = serve("", false, true)
	require.Equal(f, http.StatusOK, rec.Code)
	fullUpdates := recordedStream(f, rec)
	require.Len(f, fullUpdates, 7, "a snapshot, then one message per event")

	f.Fuzz(func(t *testing.T, lastID string, viaQuery, updates bool) {
		rec := serve(lastID, viaQuery, updates)
		switch rec.Code {
		case http.StatusBadRequest:
			assert.Contains(t, errorOf(t, rec.Result(), rec.Body.Bytes()), "Last-Event-ID")
		case http.StatusNoContent:
			assert.Equal(t, full[len(full)-1].ID, lastID, "204 only after the terminal event")
			assert.Empty(t, rec.Body.String())
		case http.StatusOK:
			got := recordedStream(t, rec)
			i := slices.IndexFunc(full, func(m message) bool { return m.ID == lastID })
			if updates {
				require.NotEmpty(t, got)
				assert.Equal(t, "snapshot", got[0].Event)
				if lastID != "" && i >= 0 {
					assert.Equal(t, lastID, got[0].ID, "the snapshot at the id resumed after")
					assert.Equal(t, fullUpdates[i+2:], got[1:], "resumed after %q", lastID)
				} else {
					assert.Equal(t, fullUpdates, got, "an id never issued restarts: %q", lastID)
				}
				return
			}
			if lastID != "" && i >= 0 {
				assert.Equal(t, full[i+1:], got, "resumed after %q", lastID)
			} else {
				assert.Equal(t, full, got, "an id never issued restarts: %q", lastID)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, lastID, rec.Body)
		}
	})
}
