package ssehttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// update is the data of an "event: update" message, as a client reads it.
type update struct {
	State       *progress.State            `json:"state"`
	Status      *string                    `json:"status"`
	Progress    *int                       `json:"progress"`
	Step        *progress.StepResult       `json:"step"`
	Index       *int                       `json:"index"`
	FinalResult json.RawMessage            `json:"final_result"`
	StartedAt   *string                    `json:"started_at"`
	EndedAt     *string                    `json:"ended_at"`
	At          *string                    `json:"at"`
	Unknown     map[string]json.RawMessage `json:"-"`
}

// updateOf decodes an update message's data, refusing unknown members.
func updateOf(t *testing.T, m message) update {
	t.Helper()
	require.Equal(t, "update", m.Event, "not an update: %+v", m)
	var u update
	dec := json.NewDecoder(strings.NewReader(m.Data))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&u), "data: %s", m.Data)
	require.Equal(t, u.Step == nil, u.Index == nil, "step and index go together: %s", m.Data)
	return u
}

// namedSnapshotOf decodes the data of an "event: snapshot" message.
func namedSnapshotOf(t *testing.T, m message) progress.Snapshot {
	t.Helper()
	require.Equal(t, "snapshot", m.Event, "not a snapshot message: %+v", m)
	return snapshotOf(t, message{ID: m.ID, Data: m.Data})
}

// applyUpdate folds u into snap as a client does.
func applyUpdate(t *testing.T, snap *progress.Snapshot, u update) {
	t.Helper()
	if u.State != nil {
		snap.State = *u.State
	}
	if u.Status != nil {
		snap.Details.Status = *u.Status
	}
	if u.Progress != nil {
		snap.Details.Progress = *u.Progress
	}
	if u.Step != nil {
		require.Equal(t, len(snap.Details.StepResults), *u.Index, "the step's index follows the steps the client has")
		snap.Details.StepResults = append(snap.Details.StepResults, *u.Step)
	}
	if u.FinalResult != nil {
		snap.Details.FinalResult = u.FinalResult
	}
	parse := func(s *string, into *progress.Snapshot, set func(*progress.Snapshot, []byte)) {
		if s != nil {
			set(into, []byte(`"`+*s+`"`))
		}
	}
	parse(u.StartedAt, snap, func(s *progress.Snapshot, b []byte) { require.NoError(t, json.Unmarshal(b, &s.StartedAt)) })
	parse(u.EndedAt, snap, func(s *progress.Snapshot, b []byte) { require.NoError(t, json.Unmarshal(b, &s.EndedAt)) })
	parse(u.At, snap, func(s *progress.Snapshot, b []byte) { require.NoError(t, json.Unmarshal(b, &s.UpdatedAt)) })
}

// openUpdates opens the task's update stream, resuming after header when
// it is not empty.
func (e *env) openUpdates(t *testing.T, id, header string) *watch {
	t.Helper()
	w, status := e.openQuery(t, id, header, url.Values{"mode": {"updates"}})
	require.Equal(t, http.StatusOK, status)
	return w
}

// foldUpdates checks the shape of a whole update stream (a snapshot
// message first, then updates and tokens) and returns the snapshot the
// client rebuilds from it.
func foldUpdates(t *testing.T, msgs []message) progress.Snapshot {
	t.Helper()
	require.NotEmpty(t, msgs)
	snap := namedSnapshotOf(t, msgs[0])
	for _, m := range msgs[1:] {
		if m.Event == "token" {
			continue
		}
		applyUpdate(t, &snap, updateOf(t, m))
	}
	return snap
}

func snapshotJSON(t *testing.T, s progress.Snapshot) string {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return string(b)
}

// TestUpdateStream follows a task in updates mode from the start: a
// snapshot message (the PENDING state), then one message per event with
// the same ids as the default stream, each update carrying only what
// changed, adding up to the final snapshot.
func TestUpdateStream(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	got := e.openUpdates(t, id, "").rest(t)
	final := e.waitTerminal(t, id)
	all := fullSequence(t, e, id)

	first := got[0]
	assert.Empty(t, first.ID, "the snapshot before the first event has no id")
	assert.Equal(t, progress.StatePending, namedSnapshotOf(t, first).State)
	require.Len(t, got, len(all)+1)
	for i, m := range got[1:] {
		assert.Equal(t, all[i].ID, m.ID, "message %d: the default stream's id", i)
		if all[i].Event == "token" {
			assert.Equal(t, all[i], m, "tokens as in the default stream")
			continue
		}
		require.Equal(t, "update", m.Event)
	}
	assert.JSONEq(t, snapshotJSON(t, final), snapshotJSON(t, foldUpdates(t, got)), "the updates add up to the task's snapshot")

	steps := 0
	for _, m := range got[1:] {
		if m.Event == "update" && updateOf(t, m).Step != nil {
			steps++
		}
	}
	assert.Equal(t, len(final.Details.StepResults), steps, "each step sent once")

	// Only what changed: the progress event of poem_flow changes the
	// percentage and the status line, a log event one step.
	for _, m := range got[1:] {
		if m.Event != "update" {
			continue
		}
		u := updateOf(t, m)
		if u.Step != nil {
			assert.Nil(t, u.Progress, "a step does not resend the percentage: %s", m.Data)
			assert.Nil(t, u.Status, "a step does not resend the status: %s", m.Data)
		}
		assert.NotNil(t, u.At, "the memory store records times: %s", m.Data)
	}
	last := updateOf(t, got[len(got)-1])
	require.NotNil(t, last.State)
	assert.Equal(t, progress.StateSuccess, *last.State)
	assert.JSONEq(t, string(final.Details.FinalResult), string(last.FinalResult))
	assert.NotNil(t, last.EndedAt)
}

// TestUpdateStreamResume resumes a finished task's update stream after
// every id it issued: the stream opens with the snapshot at that id
// (what the client rebuilds its state from), then the updates after it,
// nothing twice; after the terminal event it is 204, as in the default
// mode, and an id the task never issued starts over.
func TestUpdateStreamResume(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	final := e.waitTerminal(t, id)
	all := fullSequence(t, e, id)
	fromStart := e.openUpdates(t, id, "").rest(t)

	var snapAt progress.Snapshot // the default stream's snapshot at each id
	for i, m := range all {
		if m.Event == "" {
			snapAt = snapshotOf(t, m)
		}
		if i == len(all)-1 {
			_, status := e.openQuery(t, id, m.ID, url.Values{"mode": {"updates"}})
			assert.Equal(t, http.StatusNoContent, status, "after the terminal event")
			continue
		}
		got := e.openUpdates(t, id, m.ID).rest(t)
		require.NotEmpty(t, got)
		assert.Equal(t, m.ID, got[0].ID, "the snapshot carries the id it was resumed after")
		if i > 0 || m.Event == "" {
			assert.JSONEq(t, snapshotJSON(t, snapAt), snapshotJSON(t, namedSnapshotOf(t, got[0])), "resumed after %s", m.ID)
		}
		assert.Equal(t, fromStart[i+2:], got[1:], "resumed after %s: the rest of the stream, nothing twice", m.ID)
		assert.JSONEq(t, snapshotJSON(t, final), snapshotJSON(t, foldUpdates(t, got)))
	}

	again := e.openUpdates(t, id, "999999").rest(t)
	assert.Equal(t, fromStart, again, "an id the task never issued starts over")
}

// TestUpdateStreamLive watches a running task in updates mode, cut off
// and resumed with the last id seen, as an EventSource would.
func TestUpdateStreamLive(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "gated_flow")
	e.waitStarted(t, id)

	w := e.openUpdates(t, id, "")
	e.release(t, 2)
	var seen []message
	for len(seen) < 4 { // the snapshot, PROGRESS, step 1, step 2
		m, ok := w.nextMessage(t)
		require.True(t, ok)
		seen = append(seen, m)
	}
	w.close()
	e.release(t, 3)

	resumed := e.openUpdates(t, id, seen[len(seen)-1].ID).rest(t)
	snap := foldUpdates(t, seen)
	assert.JSONEq(t, snapshotJSON(t, snap), snapshotJSON(t, namedSnapshotOf(t, resumed[0])),
		"the resumed stream opens with the state the client had")
	final := e.waitTerminal(t, id)
	assert.JSONEq(t, snapshotJSON(t, final), snapshotJSON(t, foldUpdates(t, resumed)))
	assert.Len(t, resumed, 1+3+1, "the snapshot, steps 3 to 5, the end")
}

func TestStreamModeQuery(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	e.waitTerminal(t, id)
	all := fullSequence(t, e, id)

	for _, tt := range []struct {
		name  string
		query url.Values
		want  int
		msg   string
	}{
		{"snapshots is the default", url.Values{"mode": {"snapshots"}}, http.StatusOK, ""},
		{"empty is the default", url.Values{"mode": {""}}, http.StatusOK, ""},
		{"unknown mode", url.Values{"mode": {"values"}}, http.StatusBadRequest, `unknown mode "values": want snapshots or updates`},
		{"case matters", url.Values{"mode": {"Updates"}}, http.StatusBadRequest, `unknown mode "Updates"`},
		{"given twice", url.Values{"mode": {"updates", "updates"}}, http.StatusBadRequest, "mode given 2 times"},
		{"long value is cut", url.Values{"mode": {strings.Repeat("x", 5000)}}, http.StatusBadRequest, `unknown mode "` + strings.Repeat("x", 32) + `..."`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, status := e.openQuery(t, id, "", tt.query)
			require.Equal(t, tt.want, status)
			if status == http.StatusOK {
				assert.Equal(t, all, w.rest(t), "the default stream")
				return
			}
			resp, body := e.get(t, "/task-status/"+id+"/?"+tt.query.Encode())
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Contains(t, errorOf(t, resp, body), tt.msg)
		})
	}
	t.Run("an unknown task is 404 in updates mode too", func(t *testing.T) {
		_, status := e.openQuery(t, queue.NewID(), "", url.Values{"mode": {"updates"}})
		assert.Equal(t, http.StatusNotFound, status)
	})
}

// TestOriginalClientIgnoresUpdateMode: an EventSource's onmessage sees no
// message of an update stream (all are named), so a client asks for
// updates only if it reads them.
func TestOriginalClientIgnoresUpdateMode(t *testing.T) {
	e := newEnv(t, envOptions{})
	id := e.start(t, "poem_flow")
	for _, m := range e.openUpdates(t, id, "").rest(t) {
		assert.NotEmpty(t, m.Event, "a default message in an update stream: %+v", m)
	}
}

// streamBytes serves the whole stream of a finished task in the given
// mode and returns its body.
func streamBytes(t testing.TB, h http.Handler, id, mode string) []byte {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/task-status/"+id+"/?mode="+mode, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.Bytes()
}

// longRun records a finished task of n steps: a start, n log lines
// such as an agent writes, one event each, and the result.
func longRun(t testing.TB, store progress.Store, n int) string {
	t.Helper()
	ctx := context.Background()
	id := queue.NewID()
	require.NoError(t, store.Create(ctx, id))
	_, err := store.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"})
	require.NoError(t, err)
	for i := range n {
		_, err := store.Append(ctx, id, progress.LogEvent(fmt.Sprintf(`Using tool web_search with input "question %d about the sea"`, i)))
		require.NoError(t, err)
	}
	_, err = store.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(`"the answer"`)})
	require.NoError(t, err)
	return id
}

// TestStreamBytes200Steps measures what a client that watches a
// 200-step run from its start receives in each mode: every default
// message carries every step so far, about 20,000 step copies in all;
// the update stream sends each step once.
func TestStreamBytes200Steps(t *testing.T) {
	const n = 200
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	h := ssehttp.New(ssehttp.Config{Queue: acceptingQueue{}, Progress: store})
	id := longRun(t, store, n)

	snapshots := streamBytes(t, h, id, "snapshots")
	updates := streamBytes(t, h, id, "updates")
	copies := func(body []byte) int { return bytes.Count(body, []byte(`"type":"log"`)) }
	t.Logf("a %d-step run watched from its start: snapshots mode %d bytes (%d step copies), updates mode %d bytes (%d step copies), %.0fx less",
		n, len(snapshots), copies(snapshots), len(updates), copies(updates), float64(len(snapshots))/float64(len(updates)))
	// A step is sent with its own event and again with every later
	// message: the next steps' and the end's.
	assert.Equal(t, n*(n+1)/2+n, copies(snapshots))
	assert.Equal(t, n, copies(updates))
	assert.Less(t, len(updates)*50, len(snapshots))
}

// BenchmarkStream200Steps serves the whole stream of a finished 200-step
// run in each mode and reports the bytes sent.
func BenchmarkStream200Steps(b *testing.B) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	h := ssehttp.New(ssehttp.Config{Queue: acceptingQueue{}, Progress: store})
	id := longRun(b, store, 200)
	for _, mode := range []string{"snapshots", "updates"} {
		b.Run("mode="+mode, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(streamBytes(b, h, id, mode))
			}
			b.ReportMetric(float64(n), "bytes/stream")
		})
	}
}
