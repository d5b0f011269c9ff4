package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
)

// holdingReceiver takes webhook deliveries; it holds the first request
// without answering until released, so that the worker sending it can be
// killed mid-delivery, and accepts the others.
type holdingReceiver struct {
	srv      *httptest.Server
	verifier *notify.Verifier
	first    chan struct{} // closed when the first request arrives
	release  chan struct{}

	mu   sync.Mutex
	ids  []string // webhook-id of each request, in order
	errs []error  // what the Verifier said of each
	ok   int      // requests answered 200
	body []byte   // of the last accepted one
}

func newHoldingReceiver(t *testing.T, secret string) *holdingReceiver {
	t.Helper()
	v, err := notify.NewVerifier(secret)
	require.NoError(t, err)
	rc := &holdingReceiver{verifier: v, first: make(chan struct{}), release: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := v.VerifyRequest(r, 0)
		rc.mu.Lock()
		rc.ids = append(rc.ids, r.Header.Get(notify.HeaderID))
		rc.errs = append(rc.errs, err)
		n := len(rc.ids)
		rc.mu.Unlock()
		if n == 1 {
			close(rc.first)
			select { // the sender is killed meanwhile
			case <-rc.release:
			case <-r.Context().Done():
			}
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		rc.mu.Lock()
		rc.ok++
		rc.body = body
		rc.mu.Unlock()
	}))
	t.Cleanup(func() {
		close(rc.release)
		rc.srv.CloseClientConnections()
		rc.srv.Close()
	})
	return rc
}

func (rc *holdingReceiver) seen() (ids []string, errs []error, ok int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.ids...), append([]error(nil), rc.errs...), rc.ok
}

// TestNotificationSurvivesKilledWorker: a worker process that is killed
// (SIGKILL) while its webhook request is in flight leaves the
// notification task leased; once the lease passes, another worker process
// delivers it, with the same webhook-id, and the receiver accepts it.
func TestNotificationSurvivesKilledWorker(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	secret := notify.NewSecret()
	rc := newHoldingReceiver(t, secret)
	env := []string{"WEBHOOK_URL=" + rc.srv.URL + "/hook", "WEBHOOK_SECRET=" + secret, "WEBHOOK_ALLOW_PRIVATE=1"}
	args := q.workerArgs("-concurrency", "2", "-lease", "2s", "-grace", "5s")

	first := startWorkerEnv(t, srv.URL(), env, args...)
	ids := q.enqueueSleeps(t, []int{10})
	q.waitFinished(t, ids, 30*time.Second, nil)
	select {
	case <-rc.first:
	case <-time.After(30 * time.Second):
		t.Fatalf("no webhook arrived; worker log:\n%s", first.logTail(30))
	}
	first.kill() // mid-delivery: the request is open, the task leased

	second := startWorkerEnv(t, srv.URL(), env, args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, ok := rc.seen(); ok == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the notification was not delivered again; second worker's log:\n%s", second.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	assert.Equal(t, 0, second.terminate(30*time.Second))

	seenIDs, errs, ok := rc.seen()
	require.GreaterOrEqual(t, len(seenIDs), 2)
	assert.Equal(t, 1, ok, "accepted once")
	for i, id := range seenIDs {
		assert.Equal(t, notify.ID(ids[0], "webhook"), id, "request %d: the same webhook-id", i)
		assert.NoError(t, errs[i], "request %d verifies", i)
	}
	rc.mu.Lock()
	var event struct {
		Type string `json:"type"`
		Data struct {
			TaskID   string            `json:"task_id"`
			Flow     string            `json:"flow"`
			Snapshot progress.Snapshot `json:"snapshot"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(rc.body, &event))
	rc.mu.Unlock()
	assert.Equal(t, "task.succeeded", event.Type)
	assert.Equal(t, ids[0], event.Data.TaskID)
	assert.Equal(t, sleepFlowName, event.Data.Flow)
	assert.Equal(t, progress.StateSuccess, event.Data.Snapshot.State)

	dead, err := q.broker.Dead(context.Background(), 0)
	require.NoError(t, err)
	assert.Empty(t, dead, "nothing failed")

	// The notification task: one success, on the lease after the killed
	// worker's.
	info, err := q.broker.Task(context.Background(), notify.NotificationTaskID(notify.ID(ids[0], "webhook")))
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, info.Snapshot.State)
	assert.Equal(t, 2, info.Task.Attempt)
	assert.Equal(t, notify.FlowName, info.Task.Flow)
}
