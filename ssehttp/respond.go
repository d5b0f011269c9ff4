package ssehttp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/text"
	"github.com/flowsrun/flows/queue"
)

// deadlineWriter gives every answer Config.WriteTimeout to be taken by
// the client, counted from its start (its status line): a client that
// stops reading a JSON answer larger than the connection's buffers (a
// task's snapshot with large steps) is dropped then, rather than hold the
// connection, the handler's goroutine and the encoded answer for as long
// as it stays connected; the host is told not to set
// http.Server.WriteTimeout, which would cut streams. A stream moves the
// deadline on with each of its writes (stream.extend), and the long poll
// past its wait. Unwrap lets http.ResponseController reach the
// connection's deadlines and Flush.
type deadlineWriter struct {
	http.ResponseWriter
	timeout time.Duration
	started bool
}

// WriteHeader starts the answer's deadline and sends the status line.
func (w *deadlineWriter) WriteHeader(status int) {
	w.start()
	w.ResponseWriter.WriteHeader(status)
}

// Write starts the answer's deadline, if WriteHeader has not, and writes b.
func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the ResponseWriter w wraps, for http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// start sets the write deadline of the answer once, at its start. A
// ResponseWriter without deadlines (a recorder in tests) is fine.
func (w *deadlineWriter) start() {
	if !w.started {
		w.started = true
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON answers with status and v encoded as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the handler's own types are written; they always encode.
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError answers with status and {"error": msg}, msg made brief.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: brief(msg)})
}

// Bounds of an error message (see brief).
const (
	// maxQuote is how many bytes of a quoted string's value a message
	// keeps.
	maxQuote = 64
	// maxErrorLen is how long a message may be, in bytes.
	maxErrorLen = 1024
)

// brief shortens an error message for the client. A refusal quotes what
// it refuses (a flow name, a key, a query parameter: %q of the client's
// bytes), which may be as long as a body or a header: each Go-quoted
// string in msg whose value is longer than maxQuote keeps its first
// maxQuote bytes, followed by "...", and what follows the quote stays. A
// message still longer than maxErrorLen (a host's Identify or Authorize
// error, say) is cut so that it is maxErrorLen bytes at most, "..."
// included.
func brief(msg string) string {
	if len(msg) <= maxQuote {
		return msg
	}
	var b strings.Builder
	for rest := msg; rest != ""; {
		i := strings.IndexByte(rest, '"')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		rest = rest[i:]
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			b.WriteByte('"')
			rest = rest[1:]
			continue
		}
		rest = rest[len(q):]
		if v, err := strconv.Unquote(q); err == nil && len(v) > maxQuote {
			q = strconv.Quote(text.Clip(v, maxQuote) + "...")
		}
		b.WriteString(q)
	}
	if b.Len() > maxErrorLen {
		return text.Clip(b.String(), maxErrorLen-len("...")) + "..."
	}
	return b.String()
}

// unavailable reports whether err means a backend could not be reached in
// time, which is answered with 503 rather than 500. queue.ErrUnavailable is
// the one sentinel for both the queue and the progress store: the Redis
// backend wraps it in the errors of both.
func unavailable(err error) bool {
	if errors.Is(err, queue.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// backendError answers a backend failure that the route has no specific
// status for: 503 when the backend is unavailable, with a Retry-After of
// Config.Retry, and 500 otherwise. The cause is logged, never sent to the
// client, and logged without the credentials it may quote (redact.Error).
func (h *Handler) backendError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		// The client has gone and the error is most likely the
		// cancellation itself: nothing worth logging, nobody reads.
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
		return
	}
	if unavailable(err) {
		h.cfg.Logger.WarnContext(r.Context(), "flows: backend unavailable", "op", what, "path", r.URL.Path, "err", redact.Error(err))
		w.Header().Set("Retry-After", strconv.FormatInt(int64(max((h.cfg.Retry+time.Second-1)/time.Second, 1)), 10))
		writeError(w, http.StatusServiceUnavailable, "task backend unavailable, try again later")
		return
	}
	h.cfg.Logger.ErrorContext(r.Context(), "flows: request failed", "op", what, "path", r.URL.Path, "err", redact.Error(err))
	writeError(w, http.StatusInternalServerError, "internal error")
}
