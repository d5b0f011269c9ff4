package ssehttp_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// TestOriginalClient plays the original JavaScript client: start a poem,
// watch it with onmessage (default messages only) and render each
// snapshot until the terminal one.
func TestOriginalClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")

	w := e.open(t, id, "", "")
	first, err := w.sse.Next()
	require.NoError(t, err)
	assert.Equal(t, strconv.FormatInt(ssehttp.DefaultRetry.Milliseconds(), 10), first.Retry, "the stream opens with the retry hint")

	var snaps []progress.Snapshot
	for _, m := range w.rest(t) {
		if m.Event != "" {
			continue // what EventSource.onmessage never sees
		}
		snaps = append(snaps, snapshotOf(t, m))
	}
	require.NotEmpty(t, snaps)
	assert.Contains(t, []progress.State{progress.StatePending, progress.StateProgress}, snaps[0].State)
	for i := 1; i < len(snaps); i++ {
		assert.GreaterOrEqual(t, len(snaps[i].Details.StepResults), len(snaps[i-1].Details.StepResults), "step_results never shrink")
		assert.False(t, snaps[i-1].State.Terminal(), "nothing follows a terminal snapshot")
	}
	last := snaps[len(snaps)-1]
	assert.Equal(t, progress.StateSuccess, last.State)
	assert.Equal(t, 100, last.Details.Progress)
	var poem string
	require.NoError(t, json.Unmarshal(last.Details.FinalResult, &poem))
	assert.NotEmpty(t, poem)
	assert.Greater(t, len(last.Details.StepResults), len(snaps[0].Details.StepResults), "step_results grew")
	kinds := map[string]bool{}
	for _, s := range last.Details.StepResults {
		kinds[s.Type] = true
	}
	assert.True(t, kinds[progress.StepLog] && kinds[progress.StepToolResult], "logs and tool results: %+v", last.Details.StepResults)
}

// TestPendingFirst checks that a watch opened before a task has any event
// starts with the PENDING snapshot.
func TestPendingFirst(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := queue.NewID()
	require.NoError(t, e.store.Create(t.Context(), id))

	w := e.open(t, id, "", "")
	m, ok := w.nextMessage(t)
	require.True(t, ok)
	assert.Empty(t, m.ID, "no event has an id yet")
	s := snapshotOf(t, m)
	assert.Equal(t, progress.StatePending, s.State)
	assert.NotNil(t, s.Details.StepResults)

	_, err := e.store.Append(t.Context(), id, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "gave up"})
	require.NoError(t, err)
	rest := w.rest(t)
	require.Len(t, rest, 1)
	assert.Equal(t, "1", rest[0].ID)
	assert.Equal(t, "gave up", snapshotOf(t, rest[0]).Details.Status)
}

// fullSequence watches a finished task from the start.
func fullSequence(t *testing.T, e *env, id string) []message {
	t.Helper()
	all := e.open(t, id, "", "").rest(t)
	require.NotEmpty(t, all)
	ids := map[string]bool{}
	for _, m := range all {
		require.NotEmpty(t, m.ID)
		require.False(t, ids[m.ID], "id %s sent twice", m.ID)
		ids[m.ID] = true
	}
	assert.Equal(t, progress.StateSuccess, snapshotOf(t, all[len(all)-1]).State)
	return all
}

// TestResume disconnects in the middle of a task and reconnects with the
// last id seen: the client gets every later event exactly once, each with
// the full snapshot, whether the task went on while it was away or finished.
func TestResume(t *testing.T) {
	for _, how := range []string{"header", "query"} {
		for _, finish := range []bool{false, true} {
			name := how
			if finish {
				name += "/finished while away"
			} else {
				name += "/running"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, envOptions{})
				id := e.start(t, "gated_flow")
				e.waitStarted(t, id)

				w := e.open(t, id, "", "")
				e.release(t, 2)
				var seen []message
				for len(seen) < 3 { // PROGRESS, step 1, step 2
					m, ok := w.nextMessage(t)
					require.True(t, ok)
					seen = append(seen, m)
				}
				w.close()

				if finish {
					e.release(t, 3)
					e.waitTerminal(t, id)
				} else {
					e.release(t, 1)
				}
				lastID := seen[len(seen)-1].ID
				if how == "header" {
					w = e.open(t, id, lastID, "")
				} else {
					w = e.open(t, id, "", lastID)
				}
				if !finish {
					m, ok := w.nextMessage(t)
					require.True(t, ok)
					seen = append(seen, m)
					e.release(t, 2)
				}
				seen = append(seen, w.rest(t)...)

				assert.Equal(t, fullSequence(t, e, id), seen, "no gap, no repeat, same snapshots")
			})
		}
	}
}

// TestResumeEdges covers ids that do not point into the middle of the log.
func TestResumeEdges(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	e.waitTerminal(t, id)
	all := fullSequence(t, e, id)

	t.Run("after the terminal event", func(t *testing.T) {
		_, status := e.openStatus(t, id, all[len(all)-1].ID, "")
		assert.Equal(t, http.StatusNoContent, status, "EventSource stops reconnecting on 204")
	})
	t.Run("an id the task never issued restarts", func(t *testing.T) {
		assert.Equal(t, all, e.open(t, id, "999999", "").rest(t))
	})
	t.Run("zero means before the first event", func(t *testing.T) {
		assert.Equal(t, all, e.open(t, id, "", "0").rest(t))
	})
	t.Run("the header wins over the query", func(t *testing.T) {
		assert.Equal(t, all[1:], e.open(t, id, "1", "2").rest(t))
	})
}

// TestTokens checks that tokens are named events, ignored by onmessage,
// and that they carry the model's text in order.
func TestTokens(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	all := e.open(t, id, "", "").rest(t)

	var text string
	var defaults int
	for _, m := range all {
		switch m.Event {
		case "token":
			var tok map[string]string
			require.NoError(t, json.Unmarshal([]byte(m.Data), &tok))
			require.Len(t, tok, 1)
			text += tok["token"]
		case "":
			defaults++
			s := snapshotOf(t, m)
			assert.True(t, s.State.Valid())
		default:
			t.Errorf("unexpected event name %q", m.Event)
		}
	}
	assert.Equal(t, "The ocean hums, the deep replies.", text)
	assert.Greater(t, defaults, 1)

	var poem string
	require.NoError(t, json.Unmarshal(snapshotOf(t, all[len(all)-1]).Details.FinalResult, &poem))
	assert.Equal(t, text, poem, "the final result carries the whole text")
}

// TestHeartbeat checks that an idle stream gets comment heartbeats.
func TestHeartbeat(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{Heartbeat: 5 * time.Millisecond}})
	id := e.start(t, "gated_flow")
	w := e.open(t, id, "", "")
	pings := 0
	for pings < 3 {
		f, err := w.sse.Next()
		require.NoError(t, err)
		if slices.Contains(f.Comments, "ping") {
			assert.False(t, f.HasData, "a heartbeat is a comment only")
			pings++
		}
	}
	e.release(t, 5)
	last := w.rest(t)
	require.NotEmpty(t, last)
	assert.Equal(t, progress.StateSuccess, snapshotOf(t, last[len(last)-1]).State)
}

// TestCancelRunning cancels a running flow: the flow's context ends and
// the stream ends on FAILURE with status "Cancelled".
func TestCancelRunning(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)
	w := e.open(t, id, "", "")
	e.release(t, 1)

	resp, body := e.post(t, "/cancel-task/"+id+"/", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	assert.JSONEq(t, `{"task_id":"`+id+`","status":"cancelling"}`, string(body))

	all := w.rest(t)
	require.NotEmpty(t, all)
	last := snapshotOf(t, all[len(all)-1])
	assert.Equal(t, progress.StateFailure, last.State)
	assert.Equal(t, queue.StatusCancelled, last.Details.Status)
	messages := make([]string, len(last.Details.StepResults))
	for i, st := range last.Details.StepResults {
		messages[i] = st.Message
	}
	assert.Contains(t, messages, "step 1", "the flow ran before it was cancelled")

	resp, body = e.post(t, "/cancel-task/"+id+"/", "")
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
	errorOf(t, resp, body)
}

// TestCancelPending cancels a task no worker has started.
func TestCancelPending(t *testing.T) {
	e := newEnv(t, envOptions{})
	id, err := e.broker.Enqueue(t.Context(), "poem_flow", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	resp, body := e.post(t, "/cancel-task/"+id, "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	s := e.waitTerminal(t, id)
	assert.Equal(t, progress.StateFailure, s.State)
	assert.Equal(t, queue.StatusCancelled, s.Details.Status)
}

// TestHead checks that HEAD on an event stream answers the stream's
// headers without waiting for the task.
func TestHead(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "gated_flow")
	req, err := http.NewRequest(http.MethodHead, e.server.URL+"/task-status/"+id+"/", nil)
	require.NoError(t, err)
	resp, body := e.do(t, req)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Empty(t, body)
}

// TestStreamCarriesTimes checks the times of the default messages: when
// the snapshot last changed, when the run started and ended, and when
// each step was recorded, as extra fields that leave the shape the
// original client parses as it was.
func TestStreamCarriesTimes(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := time.Now().Add(-time.Second)
	id := e.start(t, "poem_flow")
	w := e.open(t, id, "", "")
	defer w.close()
	var last map[string]json.RawMessage
	sawRunning := false
	for _, m := range w.rest(t) {
		if m.Event != "" {
			continue
		}
		var top map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(m.Data), &top), m.Data)
		for k := range top {
			assert.Contains(t, []string{"state", "details", "updated_at", "started_at", "ended_at"}, k, "a field of the snapshot")
		}
		var details map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(top["details"], &details))
		assert.Len(t, details, 4, "details: status, progress, step_results, final_result: %s", top["details"])
		snap := snapshotOf(t, m)
		if snap.State == progress.StateProgress {
			sawRunning = true
			assert.False(t, snap.StartedAt.Before(before), "started_at of a running task: %s", m.Data)
			assert.False(t, snap.UpdatedAt.Before(snap.StartedAt), "%s", m.Data)
			assert.True(t, snap.EndedAt.IsZero())
		}
		last = top
	}
	require.True(t, sawRunning)
	snap := e.waitTerminal(t, id)
	require.Equal(t, progress.StateSuccess, snap.State)
	assert.Contains(t, last, "ended_at")
	assert.Equal(t, snap.EndedAt, snap.UpdatedAt)
	for _, st := range snap.Details.StepResults {
		assert.False(t, st.At.Before(snap.StartedAt) || st.At.After(snap.EndedAt), "a step recorded during the run: %+v", st)
	}
	resp, body := e.get(t, "/tasks/"+id+"/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var task struct {
		StartedAt time.Time `json:"started_at"`
		EndedAt   time.Time `json:"ended_at"`
	}
	require.NoError(t, json.Unmarshal(body, &task))
	assert.Equal(t, snap.EndedAt, task.EndedAt, "GET /tasks/{id}/: %s", body)
	assert.Equal(t, snap.StartedAt, task.StartedAt)
}
