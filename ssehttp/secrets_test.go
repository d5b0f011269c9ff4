package ssehttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// leakyQueue fails with the errors a client of a backend behind a URL with
// credentials would give.
type leakyQueue struct{ down bool }

const (
	plantedPass  = "PLANTED-backend-pass"
	plantedToken = "PLANTED-backend-token"
)

func (q leakyQueue) err() error {
	u := "redis://default:" + plantedPass + "@10.0.0.7:6379/0?token=" + plantedToken
	if q.down {
		return fmt.Errorf("dial %s: connection refused: %w", u, queue.ErrUnavailable)
	}
	return fmt.Errorf("unexpected reply from %s", u)
}

func (q leakyQueue) Enqueue(context.Context, string, json.RawMessage, queue.EnqueueOptions) (string, error) {
	return "", q.err()
}

func (q leakyQueue) Cancel(context.Context, string) error { return q.err() }

// TestSecretsNeverAnswered sends the bad requests of the error matrix
// with credentials in their headers and query, to a handler whose queue
// fails with errors that quote a URL with credentials. No answer (status,
// headers, body) and no log line holds any of them.
func TestSecretsNeverAnswered(t *testing.T) {
	const (
		bearer = "PLANTED-bearer-token"
		cookie = "PLANTED-cookie"
		query  = "PLANTED-query-token"
	)
	planted := []string{bearer, cookie, query, plantedPass, plantedToken}
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, envOptions{config: ssehttp.Config{Logger: logger, Identify: bearerIdentify}})
	done := e.startAs(t, "ada", "poem_flow")
	e.waitTerminal(t, done)
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	down := ssehttp.New(ssehttp.Config{Queue: leakyQueue{down: true}, Progress: store, Registry: testRegistry(0, nil, nil), Logger: logger})
	broken := ssehttp.New(ssehttp.Config{Queue: leakyQueue{}, Progress: store, Registry: testRegistry(0, nil, nil), Logger: logger})

	var answers strings.Builder
	send := func(h http.Handler, method, target, body string) {
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Cookie", "session="+cookie)
		req.Header.Set("Last-Event-ID", "x"+query)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Fprintf(&answers, "%d %v %s\n", rec.Code, rec.Header(), rec.Body)
	}
	for _, r := range []struct{ method, target, body string }{
		{"POST", "/start-task/?token=" + query, `{"flow":`},
		{"POST", "/start-task/?token=" + query, `{"flow":"nope"}`},
		{"POST", "/start-task/?token=" + query, `{"flow":"web_search_flow","inputs":{"question":1}}`},
		{"POST", "/start-task/?token=" + query, `{"FLOW":"poem_flow"}`},
		{"GET", "/tasks/" + done + "/?access_token=" + query, ""},
		{"GET", "/tasks/" + queue.NewID() + "/?access_token=" + query, ""},
		{"GET", "/task-status/" + done + "/?lastEventId=" + query, ""},
		{"POST", "/cancel-task/" + done + "/?key=" + query, ""},
		{"DELETE", "/tasks/" + done + "/?key=" + query, ""},
		{"GET", "/nope/?api_key=" + query, ""},
	} {
		send(e.handler, r.method, r.target, r.body)
	}
	for _, h := range []http.Handler{down, broken} {
		send(h, "POST", "/start-task/?token="+query, `{"flow":"poem_flow"}`)
		send(h, "POST", "/cancel-task/"+done+"/?token="+query, "")
	}

	require.Contains(t, logs.String(), "backend unavailable", "the failures were logged")
	require.Contains(t, logs.String(), "10.0.0.7:6379", "the logs still say which backend failed")
	for _, s := range planted {
		assert.NotContains(t, answers.String(), s, "an answer holds a planted credential")
		assert.NotContains(t, logs.String(), s, "a log line holds a planted credential")
	}
	if t.Failed() {
		t.Logf("answers:\n%s\nlogs:\n%s", answers.String(), logs.String())
	}
}
