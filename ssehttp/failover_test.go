package ssehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

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

// resumeSnapshots reconnects to the event stream of task id at url with
// Last-Event-ID lastID and returns the answer's status and the snapshots
// the stream carries, once it has ended.
func resumeSnapshots(ctx context.Context, t *testing.T, url, id, lastID string) (int, []progress.Snapshot) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/task-status/"+id+"/", nil)
	require.NoError(t, err)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var got []progress.Snapshot
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
			got = append(got, snap)
		}
	}
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
		status, snaps := resumeSnapshots(ctx, t, server.URL, id, lastID)
		var got []string
		for _, snap := range snaps {
			got = append(got, snap.Details.Status)
		}
		return status, got
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

// failoverAt is a progress store on Redis whose subscriptions, before
// they deliver the event with id at (or before they start, when at is
// ""), have a failover that lost events happen (once): a failover during
// a resumption, at a point of the stream's fold of the task's events.
type failoverAt struct {
	*redisbackend.Backend
	at       string
	failover func()
	once     sync.Once
}

func (s *failoverAt) Subscribe(ctx context.Context, taskID, afterID string) (<-chan progress.Event, error) {
	if s.at == "" {
		s.once.Do(s.failover)
	}
	in, err := s.Backend.Subscribe(ctx, taskID, afterID)
	if err != nil {
		return nil, err
	}
	out := make(chan progress.Event)
	go func() {
		defer close(out)
		for e := range in {
			if e.ID == s.at {
				s.once.Do(s.failover)
			}
			select {
			case out <- e:
			case <-ctx.Done():
			}
		}
	}()
	return out, nil
}

// TestResumeRacingLossyFailover: a failover that lost events the client
// saw lands while the stream resumes. Once the stream's subscription has
// delivered the client's id (the stream has the snapshot at that id), it
// must not fold the new log's events onto it (the steps twice): it ends,
// and the client's reconnection gets the task from the first event.
// When it lands before the subscription's first read, the stream never
// meets the client's id, nor the task's last event as it read it first,
// and starts over from the first event: at the end of the task, or,
// while the task goes on, once a heartbeat has passed (when it reads the
// task's head again).
func TestResumeRacingLossyFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		// atLost has the failover land as the subscription delivers
		// the client's id, else before it starts.
		atLost bool
		// running leaves the task running after the failover.
		running bool
	}{{"at the client's id", true, false}, {"before the first read", false, false}, {"before the first read, running", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			const prefix = "race"
			backend, reg, broker := redisBroker(t, srv, prefix)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			step := func(msg string) progress.Event {
				return progress.Event{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepLog, Message: msg}}
			}
			id, err := broker.Enqueue(ctx, "poem_flow", json.RawMessage(`{}`), queue.EnqueueOptions{})
			require.NoError(t, err)
			for _, msg := range []string{"one", "two"} {
				_, err := backend.Append(ctx, id, step(msg))
				require.NoError(t, err)
			}
			end := func() {
				_, err := backend.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "done"})
				assert.NoError(t, err)
			}
			promote := srv.KeepKeys(t, prefix+":{"+id+"}:task", prefix+":{"+id+"}:events", prefix+":{"+id+"}:steps")
			// The client saw "lost too" and not "lost last", so that the
			// stream folds the log to find its id. The append that takes
			// the place of the lost one has one event: no event has the
			// client's id after the failover, whatever the tags.
			_, err = backend.Append(ctx, id, step("lost"), step("lost too"), step("lost last"))
			require.NoError(t, err)
			events, err := backend.Events(ctx, id, "")
			require.NoError(t, err)
			require.Len(t, events, 5)
			lost := events[3].ID
			store := &failoverAt{Backend: backend, failover: func() {
				promote()
				_, err := backend.Append(ctx, id, step("three"))
				assert.NoError(t, err)
				if !tc.running {
					end()
				}
			}}
			if tc.atLost {
				store.at = lost
			}
			quiet := slog.New(slog.DiscardHandler)
			server := httptest.NewServer(ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg, Logger: quiet, Heartbeat: 10 * time.Millisecond}))
			t.Cleanup(server.Close)

			if tc.running {
				w := watchAt(t, server.URL, id, lost, nil)
				var got [][]string
				for _, m := range w.messages(t, 3) {
					got = append(got, stepsOf(snapshotOf(t, m)))
				}
				assert.Equal(t, [][]string{{"one"}, {"one", "two"}, {"one", "two", "three"}}, got,
					"the task from the first event, while it goes on")
				end()
				rest := w.rest(t)
				require.Len(t, rest, 1)
				assert.Equal(t, progress.StateSuccess, snapshotOf(t, rest[0]).State)
				return
			}

			// resume reconnects with Last-Event-ID lastID and returns the
			// steps and the state of each snapshot the stream carries.
			resume := func(lastID string) ([][]string, []progress.State) {
				t.Helper()
				status, snaps := resumeSnapshots(ctx, t, server.URL, id, lastID)
				require.Equal(t, http.StatusOK, status)
				var steps [][]string
				var states []progress.State
				for _, snap := range snaps {
					steps = append(steps, stepsOf(snap))
					states = append(states, snap.State)
				}
				return steps, states
			}
			fromFirst := []string{"one", "two", "three"}
			got, states := resume(lost)
			if tc.atLost {
				for _, steps := range got {
					assert.Equal(t, []string{"one", "two", "lost", "lost too", "lost last"}, steps,
						"the lost log's last event at most: the new log's events are not folded onto the lost ones")
				}
				assert.NotContains(t, states, progress.StateSuccess, "the stream ends before the end")
				got, states = resume(lost)
			}
			require.NotEmpty(t, got)
			assert.Equal(t, fromFirst, got[len(got)-1], "the task from the first event")
			assert.Equal(t, []string{"one"}, got[0], "from the first event")
			assert.Equal(t, progress.StateSuccess, states[len(states)-1])
		})
	}
}

// stepsOf returns the messages of snap's steps.
func stepsOf(snap progress.Snapshot) []string {
	steps := []string{}
	for _, st := range snap.Details.StepResults {
		steps = append(steps, st.Message)
	}
	return steps
}
