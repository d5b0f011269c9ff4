package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// TestCallersCannotReachNotifications: over HTTP, the owner of a task
// gets 404 for the task of its notification, to read, watch or cancel it,
// as for a task that is not its own, and so does an anonymous caller for
// an anonymous task's; an operator reads, cancels and re-queues it.
func TestCallersCannotReachNotifications(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			s.reg.MustRegister("work", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
			n := s.notifier(t, notify.Config{Channels: []notify.Channel{
				&recordingChannel{name: "webhook", err: flow.Permanent(errors.New("refused"))}}})
			store, ok := s.store.(progress.Backend)
			require.True(t, ok)
			api := ssehttp.New(ssehttp.Config{Queue: s.broker, Progress: store, Registry: s.reg,
				Inspector: queue.NewInspector(s.backend, s.store, queue.InspectorConfig{Logger: s.logger}),
				Identify: func(r *http.Request) (ssehttp.Principal, error) {
					who := r.Header.Get("X-Caller")
					return ssehttp.Principal{ID: who, Operator: who == "ops"}, nil
				}})
			do := func(method, path, who string) (int, string) {
				t.Helper()
				var body *strings.Reader
				if method == http.MethodPost {
					body = strings.NewReader(`{"flow": "work"}`)
				} else {
					body = strings.NewReader("")
				}
				// A stream the caller may watch would last as long as
				// its task: the context ends it.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				req := httptest.NewRequestWithContext(ctx, method, path, body)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Caller", who)
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				return rec.Code, rec.Body.String()
			}
			// notificationOf starts a task as who, ends it as a worker
			// would, and returns the id of its notification's task.
			notificationOf := func(who string) string {
				t.Helper()
				code, body := do(http.MethodPost, "/start-task/", who)
				require.Equal(t, http.StatusOK, code, body)
				var started struct {
					TaskID string `json:"task_id"`
				}
				require.NoError(t, json.Unmarshal([]byte(body), &started))
				info, err := s.broker.Task(context.Background(), started.TaskID)
				require.NoError(t, err)
				require.Equal(t, who, info.Task.Owner)
				ids, err := n.Notify(context.Background(), notify.Ended(queue.Finished{Task: info.Task,
					Snapshot: progress.Snapshot{State: progress.StateSuccess, Details: progress.Details{Status: "Completed"}}}))
				require.NoError(t, err)
				require.Len(t, ids, 1)
				return ids[0]
			}
			owned, anonymous := notificationOf("ada"), notificationOf("")
			for _, c := range []struct{ who, nid string }{{"ada", owned}, {"", anonymous}} {
				for _, route := range []struct{ method, path string }{
					{http.MethodGet, "/tasks/" + c.nid + "/"},
					{http.MethodGet, "/task-status/" + c.nid + "/"},
					{http.MethodPost, "/cancel-task/" + c.nid + "/"},
				} {
					code, body := do(route.method, route.path, c.who)
					assert.Equal(t, http.StatusNotFound, code, "%s %s as %q: %s", route.method, route.path, c.who, body)
				}
			}

			code, body := do(http.MethodGet, "/tasks/"+owned+"/", "ops")
			require.Equal(t, http.StatusOK, code, body)
			assert.Contains(t, body, `"flow":"`+notify.FlowName+`"`)
			code, body = do(http.MethodPost, "/cancel-task/"+owned+"/", "ops")
			assert.Equal(t, http.StatusAccepted, code, body)
			info := s.waitEnded(t, owned)
			assert.Equal(t, queue.StatusCancelled, info.Snapshot.Details.Status)

			s.run(t, 10*time.Millisecond)
			s.waitEnded(t, anonymous)
			s.dead(t, anonymous)
			code, body = do(http.MethodPost, "/dead/"+anonymous+"/requeue/", "ops")
			require.Equal(t, http.StatusOK, code, body)
			var requeued struct {
				TaskID string `json:"task_id"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &requeued))
			code, body = do(http.MethodGet, "/tasks/"+requeued.TaskID+"/", "")
			assert.Equal(t, http.StatusNotFound, code, "the re-queued notification is no caller's either: %s", body)
		})
	}
}
