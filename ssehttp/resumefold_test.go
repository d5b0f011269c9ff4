package ssehttp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// eventsCounter is a progress store that counts the calls of its Events
// (what reads a task's log whole, into one slice), and its subscriptions
// that are open (whose context has not ended).
type eventsCounter struct {
	progress.Backend
	calls atomic.Int64
	open  atomic.Int64
}

func (s *eventsCounter) Subscribe(ctx context.Context, taskID, afterID string) (<-chan progress.Event, error) {
	ch, err := s.Backend.Subscribe(ctx, taskID, afterID)
	if err == nil {
		s.open.Add(1)
		context.AfterFunc(ctx, func() { s.open.Add(-1) })
	}
	return ch, err
}

func (s *eventsCounter) Events(ctx context.Context, taskID, afterID string) ([]progress.Event, error) {
	s.calls.Add(1)
	return s.Backend.Events(ctx, taskID, afterID)
}

// watchAt opens the event stream of task id at base with Last-Event-ID
// lastID (none when "") and the query, requires a 200 and returns the
// watch, closed when the test ends.
func watchAt(t *testing.T, base, id, lastID string, query url.Values) *watch {
	t.Helper()
	w, status := openWatch(t, http.DefaultClient, base, id, lastID, query)
	require.Equal(t, http.StatusOK, status)
	return w
}

// messages reads n messages of w, which must not end before.
func (w *watch) messages(t *testing.T, n int) []message {
	t.Helper()
	out := make([]message, 0, n)
	for len(out) < n {
		m, ok := w.nextMessage(t)
		require.True(t, ok, "the stream ended after %d messages, want %d", len(out), n)
		out = append(out, m)
	}
	return out
}

// TestResumeFoldsItsSubscription: a client that resumes behind its task's
// last event gets exactly the messages after its id, in both stream
// modes, on a task that has ended and on one still running, and an
// update stream opens with the snapshot at its id; the stream rebuilds
// that snapshot from its one subscription of the task, and never reads
// the task's log whole (Events). An id the task never issued, on a task
// still running, starts over from the first event without waiting for
// the task to go on.
func TestResumeFoldsItsSubscription(t *testing.T) {
	updates := url.Values{"mode": {"updates"}}
	onEachBackend(t, func(t *testing.T, s *site) {
		ctx := t.Context()
		store := &eventsCounter{Backend: s.store}
		base := s.serve(t, ssehttp.Config{Queue: s.broker, Progress: store})
		step := func(msg string) progress.Event {
			return progress.Event{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepLog, Message: msg}}
		}
		// newTask returns a task with events of every kind, some of one
		// append, and their count; it is still running.
		newTask := func() (string, int) {
			t.Helper()
			id, err := s.broker.Enqueue(ctx, "poem_flow", json.RawMessage(`{}`), queue.EnqueueOptions{})
			require.NoError(t, err)
			for _, batch := range [][]progress.Event{
				{{Type: progress.EventState, State: progress.StateProgress, Status: "Running"}},
				{step("one")},
				{{Type: progress.EventToken, Token: "The sea "}, {Type: progress.EventToken, Token: "hums"}},
				{{Type: progress.EventProgress, Progress: 40, Status: "Writing"}, step("two")},
				{step("three")},
				{{Type: progress.EventStatus, Status: "Polishing"}},
			} {
				_, err := s.store.Append(ctx, id, batch...)
				require.NoError(t, err)
			}
			return id, 8
		}
		end := func(id string) {
			t.Helper()
			_, err := s.store.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)})
			require.NoError(t, err)
		}
		// snapshotAt is the snapshot of the default stream all at its
		// i-th message: that of the last default message up to it.
		snapshotAt := func(all []message, i int) string {
			t.Helper()
			for ; i >= 0; i-- {
				if all[i].Event == "" {
					return all[i].Data
				}
			}
			require.FailNow(t, "no default message up to the id")
			return ""
		}

		t.Run("ended", func(t *testing.T) {
			id, n := newTask()
			end(id)
			all := watchAt(t, base, id, "", nil).rest(t)
			require.Len(t, all, n+1)
			allUpdates := watchAt(t, base, id, "", updates).rest(t)
			require.Len(t, allUpdates, n+2, "the opening snapshot, then one update per event")
			store.calls.Store(0)
			for name, i := range map[string]int{"first": 0, "middle": n / 2, "token": 2, "second to last": n - 1} {
				lastID := all[i].ID
				assert.Equal(t, all[i+1:], watchAt(t, base, id, lastID, nil).rest(t), "after the %s event", name)
				got := watchAt(t, base, id, lastID, updates).rest(t)
				require.NotEmpty(t, got)
				assert.Equal(t, message{ID: lastID, Event: "snapshot", Data: got[0].Data}, got[0], "after the %s event", name)
				assert.JSONEq(t, snapshotAt(all, i), got[0].Data, "the snapshot at the %s event", name)
				assert.Equal(t, allUpdates[i+2:], got[1:], "after the %s event", name)
			}
			assert.Zero(t, store.calls.Load(), "Events calls: the log read whole")
		})

		t.Run("running", func(t *testing.T) {
			id, n := newTask()
			fresh := watchAt(t, base, id, "", nil)
			all := fresh.messages(t, n)
			freshUpdates := watchAt(t, base, id, "", updates)
			allUpdates := freshUpdates.messages(t, n+1)
			store.calls.Store(0)

			type resumed struct {
				name string
				w    *watch
			}
			var streams []resumed
			for name, i := range map[string]int{"first": 0, "middle": n / 2, "second to last": n - 2} {
				lastID := all[i].ID
				w := watchAt(t, base, id, lastID, nil)
				assert.Equal(t, all[i+1:], w.messages(t, n-i-1), "after the %s event", name)
				streams = append(streams, resumed{name, w})
				u := watchAt(t, base, id, lastID, updates)
				got := u.messages(t, n-i)
				assert.Equal(t, message{ID: lastID, Event: "snapshot", Data: got[0].Data}, got[0], "after the %s event", name)
				assert.JSONEq(t, snapshotAt(all, i), got[0].Data, "the snapshot at the %s event", name)
				assert.Equal(t, allUpdates[i+2:], got[1:], "after the %s event", name)
				streams = append(streams, resumed{name + ", updates", u})
			}

			// An id the task never issued, well-formed: the task goes on
			// only after the stream has sent what a stream from the start
			// sends so far.
			unknown := "999999"
			if strings.Contains(all[0].ID, "-") {
				unknown = "999999-0-zzzz"
			}
			restart := watchAt(t, base, id, unknown, nil)
			assert.Equal(t, all, restart.messages(t, n), "an unknown id: the stream from the first event")
			restartUpdates := watchAt(t, base, id, unknown, updates)
			assert.Equal(t, allUpdates, restartUpdates.messages(t, n+1), "an unknown id: the update stream from the start")
			// Every stream holds one subscription: those a resume dropped
			// (a start over) are freed.
			want := int64(2 + len(streams) + 2)
			require.Eventually(t, func() bool { return store.open.Load() == want }, testTimeout, time.Millisecond,
				"open subscriptions: %d, want one per stream", store.open.Load())

			end(id)
			rest := fresh.rest(t)
			require.Len(t, rest, 1)
			restUpdates := freshUpdates.rest(t)
			require.Len(t, restUpdates, 1)
			for _, r := range streams {
				want := rest
				if strings.HasSuffix(r.name, "updates") {
					want = restUpdates
				}
				assert.Equal(t, want, r.w.rest(t), "after the %s event: the end", r.name)
			}
			assert.Equal(t, rest, restart.rest(t), "an unknown id: the end")
			assert.Equal(t, restUpdates, restartUpdates.rest(t), "an unknown id, updates: the end")
			assert.Zero(t, store.calls.Load(), "Events calls: the log read whole")
			assert.Eventually(t, func() bool { return store.open.Load() == 0 }, testTimeout, time.Millisecond,
				"open subscriptions once every stream ended: %d", store.open.Load())
		})
	})
}
