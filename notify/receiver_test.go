package notify_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
)

// received is one request a receiver got.
type received struct {
	ID, Timestamp, Signature string
	ContentType              string
	Body                     []byte
	VerifyErr                error // what the receiver's Verifier said
	Status                   int   // what the receiver answered
}

// receiver is a real HTTP server that takes webhook deliveries, verifies
// each with a Verifier and answers as its respond func says (200 when
// nil). It keeps every request.
type receiver struct {
	srv      *httptest.Server
	verifier *notify.Verifier

	mu      sync.Mutex
	got     []received
	respond func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
	arrived chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	t.Helper()
	v, err := notify.NewVerifier(secret)
	require.NoError(t, err)
	rc := &receiver{verifier: v, arrived: make(chan struct{}, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := received{
		ID: r.Header.Get(notify.HeaderID), Timestamp: r.Header.Get(notify.HeaderTimestamp),
		Signature: r.Header.Get(notify.HeaderSignature), ContentType: r.Header.Get("Content-Type"),
		Body: body, VerifyErr: rc.verifier.Verify(r.Header, body),
	}
	rc.mu.Lock()
	n := len(rc.got) + 1
	respond := rc.respond
	rc.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	switch {
	case rec.VerifyErr != nil:
		http.Error(sw, rec.VerifyErr.Error(), http.StatusUnauthorized)
	case respond != nil:
		respond(n, sw, r)
	default:
		sw.WriteHeader(http.StatusOK)
	}
	rec.Status = sw.status
	rc.mu.Lock()
	rc.got = append(rc.got, rec)
	rc.mu.Unlock()
	rc.arrived <- struct{}{}
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (rc *receiver) setRespond(f func(n int, w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = f
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// accepted returns the requests answered 2xx.
func (rc *receiver) accepted() []received {
	var out []received
	for _, r := range rc.requests() {
		if r.Status >= 200 && r.Status < 300 {
			out = append(out, r)
		}
	}
	return out
}

// sampleNotification is the notification of a finished poem task.
func sampleNotification(channel string) *notify.Notification {
	finished := time.Date(2026, 12, 4, 10, 0, 3, 0, time.UTC)
	return &notify.Notification{
		ID:      notify.ID("0123456789abcdef0123456789abcdef", channel),
		Channel: channel,
		TaskID:  "0123456789abcdef0123456789abcdef",
		Flow:    "poem_flow",
		State:   progress.StateSuccess,
		Snapshot: progress.Snapshot{State: progress.StateSuccess, Details: progress.Details{
			Status: "Completed", Progress: 100,
			StepResults: []progress.StepResult{{Type: progress.StepLog, Message: "Choosing a theme: done"}},
			FinalResult: json.RawMessage(`"The sea <hums> & the deep replies."`),
		}},
		Attempts:   1,
		EnqueuedAt: finished.Add(-3 * time.Second),
		StartedAt:  finished.Add(-2 * time.Second),
		FinishedAt: finished,
	}
}
