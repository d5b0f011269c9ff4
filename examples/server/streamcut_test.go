package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
)

// streamCutter is middleware for the browser tests that stands between the
// page and the event streams (GET /task-status/{id}/), as a proxy would. It
// records each stream request, can cut every open stream at once, as a
// proxy timeout or a restarted server does, and can hold the requests that
// come next until the test lets them through, so that the page stays in
// its reconnecting state long enough to be seen.
type streamCutter struct {
	mu       sync.Mutex
	open     map[*streamRequest]context.CancelFunc
	hold     chan struct{} // closed by release; nil when nothing is held
	requests []*streamRequest
}

// streamRequest is one stream request the cutter saw.
type streamRequest struct {
	// LastEventID is the id the client resumed after, from the
	// Last-Event-ID header or the lastEventId query parameter.
	LastEventID string
	// FromHeader tells that LastEventID came in the header, as an
	// EventSource sends it when it reconnects by itself.
	FromHeader bool
	// Mode is the stream mode the client asked for (the mode query
	// parameter).
	Mode string
	// Status is the response's status code, 0 until it is written.
	Status int
}

func newStreamCutter() *streamCutter {
	return &streamCutter{open: make(map[*streamRequest]context.CancelFunc)}
}

// wrap returns next behind the cutter.
func (c *streamCutter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/task-status/") {
			next.ServeHTTP(w, r)
			return
		}
		req := &streamRequest{LastEventID: r.Header.Get("Last-Event-ID"), Mode: r.URL.Query().Get("mode")}
		req.FromHeader = req.LastEventID != ""
		if !req.FromHeader {
			req.LastEventID = r.URL.Query().Get("lastEventId")
		}
		c.mu.Lock()
		c.requests = append(c.requests, req)
		hold := c.hold
		c.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}

		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		c.mu.Lock()
		c.open[req] = cancel
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.open, req)
			c.mu.Unlock()
		}()
		next.ServeHTTP(&statusRecorder{ResponseWriter: w, cutter: c, req: req}, r.WithContext(ctx))
	})
}

// cutAndHold ends every open stream, the server side closing the
// connection's response, and holds the stream requests that come next
// until release. It returns how many streams it cut.
func (c *streamCutter) cutAndHold() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold == nil {
		c.hold = make(chan struct{})
	}
	for _, cancel := range c.open {
		cancel()
	}
	return len(c.open)
}

// release lets the held stream requests, and all later ones, through.
func (c *streamCutter) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
}

// seen returns a copy of the stream requests seen so far, in order.
func (c *streamCutter) seen() []streamRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]streamRequest, len(c.requests))
	for i, r := range c.requests {
		out[i] = *r
	}
	return out
}

// statusRecorder notes the status of a stream response. Unwrap keeps
// http.ResponseController (flush, write deadlines) working through it.
type statusRecorder struct {
	http.ResponseWriter
	cutter *streamCutter
	req    *streamRequest
}

func (s *statusRecorder) WriteHeader(code int) {
	s.cutter.mu.Lock()
	if s.req.Status == 0 {
		s.req.Status = code
	}
	s.cutter.mu.Unlock()
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.cutter.mu.Lock()
	if s.req.Status == 0 {
		s.req.Status = http.StatusOK
	}
	s.cutter.mu.Unlock()
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
