package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/flowsrun/flows/internal/sse"
)

// sseMessage is one Server-Sent Events message.
type sseMessage struct {
	ID, Event, Data string
}

// sseReader reads the messages with data of an event stream, skipping
// comments and retry hints.
type sseReader struct {
	r *sse.Reader
}

// newSSEReader returns an sseReader of the event stream r.
func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: sse.NewReader(r)} }

// next returns the next message that has data, or io.EOF at the end of
// the stream.
func (s *sseReader) next() (sseMessage, error) {
	for {
		m, err := s.r.Next()
		if err != nil {
			return sseMessage{}, err
		}
		if m.HasData {
			return sseMessage{ID: m.ID, Event: m.Event, Data: m.Data}, nil
		}
	}
}

// wireSnapshot is the part of a snapshot message the clients check.
type wireSnapshot struct {
	State   string `json:"state"`
	Details struct {
		Status string `json:"status"`
	} `json:"details"`
}

func (m sseMessage) snapshot() (wireSnapshot, error) {
	var s wireSnapshot
	err := json.Unmarshal([]byte(m.Data), &s)
	return s, err
}

// watch opens the event stream of task id on the server at base.
func watch(ctx context.Context, client *http.Client, base, id string) (*sseReader, io.Closer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/", nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("task-status %s: status %d", id, resp.StatusCode)
	}
	return newSSEReader(resp.Body), resp.Body, nil
}
