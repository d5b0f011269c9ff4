package ssehttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/internal/jsonenc"
	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// maxEventIDLen bounds a Last-Event-ID before it reaches the store.
const maxEventIDLen = 256

// taskStatus serves GET /task-status/{id}/: the task's event stream. See
// the package documentation for what the stream carries.
func (h *Handler) taskStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, info, ok := h.taskAccessOr(w, r, ActionWatch, id, h.streamBackendError)
	if !ok {
		return
	}
	// Given twice, header or parameter, which of the two ids the client
	// meant is not for the server to guess, as for mode and
	// Idempotency-Key.
	headers := r.Header.Values("Last-Event-ID")
	if len(headers) > 1 {
		writeError(w, http.StatusBadRequest, givenOnce("Last-Event-ID", len(headers)))
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		if ids := r.URL.Query()["lastEventId"]; len(ids) > 1 {
			writeError(w, http.StatusBadRequest, givenOnce("lastEventId", len(ids)))
			return
		} else if len(ids) == 1 {
			lastID = ids[0]
		}
	}
	if len(lastID) > maxEventIDLen || strings.ContainsAny(lastID, "\x00\r\n") {
		writeError(w, http.StatusBadRequest, "malformed Last-Event-ID")
		return
	}
	mode, err := parseMode(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	release, ok := h.streamSlot(w, r, p)
	if !ok {
		return
	}
	defer release()

	ctx := r.Context()
	sub, err := h.open(ctx, id, lastID, info)
	if err != nil {
		switch {
		case errors.Is(err, progress.ErrNotFound):
			writeError(w, http.StatusNotFound, "task not found")
		case errors.Is(err, progress.ErrBadEventID):
			writeError(w, http.StatusBadRequest, "malformed Last-Event-ID")
		default:
			h.streamBackendError(w, r, "subscribe", err)
		}
		return
	}
	if sub.ended {
		// The client has seen the end already: 204 tells an EventSource
		// to stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	defer sub.cancel()

	if h.tel.metrics.Active() {
		h.tel.streams.Add(ctx, 1)
		defer h.tel.streams.Add(ctx, -1)
	}
	s := &stream{w: w, rc: http.NewResponseController(w), timeout: h.cfg.WriteTimeout}
	if !startStream(w, r) {
		return
	}
	h.boundUnacked(ctx)

	s.write(h.retryField() + "\n")
	switch {
	case mode == modeUpdates:
		// What the client rebuilds its state from: the snapshot at its
		// Last-Event-ID, or the PENDING one before the first event.
		s.snapshotEvent(lastIDIfResumed(lastID, sub), sub.snap)
	case sub.initial:
		s.snapshot("", sub.snap)
	}
	if err := s.flush(); err != nil {
		return
	}

	heartbeat := time.NewTicker(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			s.write(": ping\n\n")
		case ev, ok := <-sub.events:
			if !ok {
				// Expired, or the store gave up: end the stream and let
				// the client reconnect with its Last-Event-ID.
				return
			}
			switch {
			case ev.Type == progress.EventToken:
				s.token(ev)
			case mode == modeUpdates:
				before := markOf(&sub.snap)
				sub.snap.Apply(ev)
				s.update(ev.ID, before, &sub.snap)
			default:
				sub.snap.Apply(ev)
				s.snapshot(ev.ID, sub.snap)
			}
			if ev.Terminal() {
				_ = s.flush()
				return
			}
			heartbeat.Reset(h.cfg.Heartbeat)
		}
		if err := s.flush(); err != nil {
			h.cfg.Logger.DebugContext(ctx, "flows: event stream closed", "task_id", id, "err", err)
			return
		}
	}
}

// startStream sends the status line and headers of an event stream (200,
// text/event-stream, no caching or buffering on the way) and reports
// whether a body follows: not for HEAD.
func startStream(w http.ResponseWriter, r *http.Request) bool {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Connection", "keep-alive")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return r.Method != http.MethodHead
}

// retryField is the stream's "retry:" line: Config.Retry in milliseconds.
func (h *Handler) retryField() string {
	return "retry: " + strconv.FormatInt(h.cfg.Retry.Milliseconds(), 10) + "\n"
}

// streamBackendError answers a backend failure at the opening of a stream,
// before anything is sent: when the backend is unavailable, with an event
// stream that only says so and when to come back (a comment, and a
// "retry:" line of Config.Retry), then ends. An EventSource takes any
// status but 200 and 204, and any type but text/event-stream, as final: it
// fires error and never reconnects, so a 503 would leave a browser whose
// stream broke during an outage without its live view for good. This
// answer it treats as a stream that ended: it reconnects after the retry
// delay with its Last-Event-ID, as a client that follows the SSE
// reconnection rules does. Any other failure is answered as backendError
// does.
func (h *Handler) streamBackendError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil || !unavailable(err) {
		h.backendError(w, r, what, err)
		return
	}
	h.cfg.Logger.WarnContext(r.Context(), "flows: backend unavailable", "op", what, "path", r.URL.Path, "err", redact.Error(err))
	h.retryStream(w, r, "task backend unavailable")
}

// retryStream answers a stream request that cannot be served now with
// an event stream (200) that holds only a comment, why and when to come
// back, and a "retry:" line of Config.Retry, and then ends:
//
//	: <why>, reconnect in 3s
//	retry: 3000
//
// An EventSource dispatches nothing of it and keeps its Last-Event-ID,
// and reconnects with it after the delay. HEAD gets the headers only.
func (h *Handler) retryStream(w http.ResponseWriter, r *http.Request, why string) {
	if !startStream(w, r) {
		return
	}
	_, _ = io.WriteString(w, ": "+why+", reconnect in "+h.cfg.Retry.String()+"\n"+h.retryField()+"\n")
}

// subscription is an open watch of a task: the snapshot as the client
// last saw it, and the channel of the events it has not seen.
type subscription struct {
	snap   progress.Snapshot
	events <-chan progress.Event
	// initial is set when the client has seen nothing and the task has
	// no event yet: snap, the PENDING snapshot, is sent first.
	initial bool
	// resumed is set when the watch goes on after the client's
	// Last-Event-ID: snap is the snapshot at that event.
	resumed bool
	// ended is set when the client's Last-Event-ID is the task's
	// terminal event: nothing more will come, and there is no watch
	// (events and cancel are nil).
	ended bool
	// cancel ends the subscription and frees what the store holds for it.
	cancel context.CancelFunc
}

// open subscribes to the task's events after lastID and rebuilds the
// snapshot the client saw with that event. info, when not nil, is the
// task as the access check read it.
//
// Event ids belong to the store and are opaque here: they are only
// compared for equality. A resume reads first where the task is (the
// state and last event id of info, or Store.Head, which costs a few bytes
// whatever the task's size): when lastID is the last event of a task
// that has ended, the client has seen everything and nothing is read or
// watched (ended); when it is the last event of a task still going, the
// snapshot at lastID is the current one. Otherwise the watch subscribes
// from the first event, and folds the events the subscription delivers
// up to the one with lastID into the snapshot at lastID, without sending
// them; the rest of the same subscription is what the client missed.
// The log is thus read once, as the store delivers it (on Redis, in
// pages of about 4 MiB), never whole into memory. When no event up to
// the task's last one (as read first) has the id (a well-formed id the
// task never issued, or, on Redis, one of events that a failover lost,
// whose ids are not those of the events that took their place), the
// watch restarts from the first event.
func (h *Handler) open(ctx context.Context, id, lastID string, info *queue.TaskInfo) (*subscription, error) {
	if lastID != "" {
		sub, err := h.resume(ctx, id, lastID, info)
		if sub != nil || err != nil {
			return sub, err
		}
	}
	stored, last, err := h.cfg.Progress.Snapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	events, err := h.cfg.Progress.Subscribe(subCtx, id, "")
	if err != nil {
		cancel()
		return nil, err
	}
	snap := progress.NewSnapshot()
	if last == "" {
		// No event yet: the snapshot is the task's record as it was
		// created, which may say more than NewSnapshot (on Redis, the
		// status line of a task waiting for a slot of its flow is in the
		// record, with no event behind it). The events, from the first,
		// are folded onto it.
		snap = stored.Clone()
	}
	return &subscription{snap: snap, events: events, initial: last == "", cancel: cancel}, nil
}

// resume opens the watch after lastID (see open). It returns neither a
// subscription nor an error when the task never issued lastID: the watch
// then starts from the first event.
func (h *Handler) resume(ctx context.Context, id, lastID string, info *queue.TaskInfo) (*subscription, error) {
	var state progress.State
	var last string
	if info != nil {
		state, last = info.Snapshot.State, info.LastEventID
	} else {
		var err error
		if state, last, err = h.cfg.Progress.Head(ctx, id); err != nil {
			return nil, err
		}
	}
	if lastID == last && state.Terminal() {
		return &subscription{ended: true}, nil
	}
	if lastID == last {
		// The client is up to date: the snapshot at lastID is the
		// current one, unless an event came in the meantime.
		var snap progress.Snapshot
		atLast := false
		if info != nil {
			snap, atLast = info.Snapshot.Clone(), true
		} else {
			current, currentLast, err := h.cfg.Progress.Snapshot(ctx, id)
			if err != nil {
				return nil, err
			}
			snap, atLast = current, currentLast == lastID
		}
		if atLast {
			subCtx, cancel := context.WithCancel(ctx)
			events, err := h.cfg.Progress.Subscribe(subCtx, id, lastID)
			if err != nil {
				cancel()
				return nil, err
			}
			return &subscription{snap: snap, events: events, resumed: true, cancel: cancel}, nil
		}
	}
	if last == "" {
		// No event yet: the task never issued lastID.
		return nil, h.checkEventID(ctx, id, lastID)
	}
	return h.fold(ctx, id, lastID, last)
}

// fold opens the watch after lastID by a subscription from the first
// event: the events up to the one with lastID are folded into the
// snapshot at lastID, and the rest of the subscription is the watch.
//
// It returns neither a subscription nor an error when the task never
// issued lastID, which it knows without waiting for more events of a
// task still going: lastID, if the task issued it, comes before last
// (the task's last event as read before) or is it, so the fold stops
// when it meets last, or when its subscription ends first (the task
// gone, or, on Redis, a log that a failover replaced while it was
// read). A failover that lost last too, before the subscription's first
// read, leaves a log where the fold meets neither: each time a heartbeat
// passes while it folds, it reads the task's head again, and stops when
// it has folded the task's last event.
func (h *Handler) fold(ctx context.Context, id, lastID, last string) (*subscription, error) {
	subCtx, cancel := context.WithCancel(ctx)
	events, err := h.cfg.Progress.Subscribe(subCtx, id, "")
	if err != nil {
		cancel()
		return nil, err
	}
	check := time.NewTicker(h.cfg.Heartbeat)
	defer check.Stop()
	snap := progress.NewSnapshot()
	folded := "" // the id of the last event folded
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				cancel()
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				return nil, h.checkEventID(ctx, id, lastID)
			}
			snap.Apply(ev)
			folded = ev.ID
			switch ev.ID {
			case lastID:
				if snap.State.Terminal() {
					// The end came since the head was read.
					cancel()
					return &subscription{ended: true}, nil
				}
				return &subscription{snap: snap, events: events, resumed: true, cancel: cancel}, nil
			case last:
				cancel()
				return nil, h.checkEventID(ctx, id, lastID)
			}
		case <-check.C:
			_, now, err := h.cfg.Progress.Head(ctx, id)
			if err != nil {
				cancel()
				return nil, err
			}
			if now == folded {
				cancel()
				return nil, h.checkEventID(ctx, id, lastID)
			}
		}
	}
}

// checkEventID tells whether the store takes lastID, an id that the task
// never issued, as one of its form: nil if so (the watch starts over from
// the first event), ErrBadEventID if not. Only the store knows the form
// of its ids, and it says so when it is given one to read after: a
// Subscribe after lastID, which refuses a malformed id before it reads
// anything, and is dropped at once.
func (h *Handler) checkEventID(ctx context.Context, id, lastID string) error {
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := h.cfg.Progress.Subscribe(subCtx, id, lastID)
	return err
}

// stream writes Server-Sent Events messages. Writes stay in the
// ResponseWriter's buffer until flush sends them; the first error is kept
// and returned by flush. Every write may reach the connection (a large
// message fills the buffer), so each one first moves the write deadline.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	enc     snapshotEncoder
	err     error
}

// write writes text as it is.
func (s *stream) write(text string) {
	if s.err == nil {
		s.extend()
		_, s.err = io.WriteString(s.w, text)
	}
}

// extend gives the next write WriteTimeout to complete. A ResponseWriter
// without deadlines (a recorder in tests) is fine.
func (s *stream) extend() {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
}

// message writes one message: its id, its event name when not "", and the
// data that appendData appends, which must be JSON (it has no line
// breaks, so it fits one data line). The message is built in a pooled
// buffer and written at once.
func (s *stream) message(id, event string, appendData func([]byte) ([]byte, error)) {
	if s.err != nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	buf := append((*bp)[:0], "id: "...)
	buf = append(buf, id...)
	if event != "" {
		buf = append(buf, "\nevent: "...)
		buf = append(buf, event...)
	}
	buf = append(buf, "\ndata: "...)
	buf, err := appendData(buf)
	if err != nil {
		s.err = err
	} else {
		buf = append(buf, "\n\n"...)
		s.extend()
		_, s.err = s.w.Write(buf)
	}
	*bp = buf
	putBuf(bp)
}

// lastIDIfResumed is the id of the snapshot an update stream opens with:
// the client's Last-Event-ID when the watch resumes after it, else none
// (the PENDING snapshot before the first event).
func lastIDIfResumed(lastID string, sub *subscription) string {
	if sub.resumed {
		return lastID
	}
	return ""
}

// snapshot writes a default message carrying snap, which must be the
// stream's snapshot (the encoder keeps the steps it has encoded).
func (s *stream) snapshot(id string, snap progress.Snapshot) {
	s.message(id, "", func(buf []byte) ([]byte, error) { return s.enc.appendSnapshot(buf, snap) })
}

// snapshotEvent writes a named "snapshot" message carrying snap, the
// first message of an update stream. Its encoding is not kept: nothing
// encodes the steps again.
func (s *stream) snapshotEvent(id string, snap progress.Snapshot) {
	s.message(id, "snapshot", func(buf []byte) ([]byte, error) {
		var enc snapshotEncoder
		return enc.appendSnapshot(buf, snap)
	})
}

// update writes a named "update" message: what the event with the given
// id changed from before to snap.
func (s *stream) update(id string, before snapshotMark, snap *progress.Snapshot) {
	s.message(id, "update", func(buf []byte) ([]byte, error) { return appendUpdate(buf, before, snap) })
}

// token writes a named "token" message.
func (s *stream) token(ev progress.Event) {
	s.message(ev.ID, "token", func(buf []byte) ([]byte, error) {
		buf = append(buf, `{"token":`...)
		buf = jsonenc.AppendString(buf, ev.Token)
		return append(buf, '}'), nil
	})
}

// flush sends the buffered messages to the client, within the write
// timeout.
func (s *stream) flush() error {
	if s.err != nil {
		return s.err
	}
	s.extend()
	s.err = s.rc.Flush()
	return s.err
}
