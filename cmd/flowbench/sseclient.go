package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// sseMessage is one Server-Sent Events message.
type sseMessage struct {
	ID, Event, Data string
}

// sseReader reads messages from an event stream, skipping comments and
// "retry:" lines.
type sseReader struct {
	r *bufio.Reader
}

// next returns the next message that has data, or io.EOF at the end of
// the stream.
func (s *sseReader) next() (sseMessage, error) {
	var m sseMessage
	var data strings.Builder
	hasData := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return m, io.EOF
			}
			return m, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if hasData {
				m.Data = data.String()
				return m, nil
			}
			m = sseMessage{}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			m.ID = value
		case "event":
			m.Event = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
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
	return &sseReader{r: bufio.NewReaderSize(resp.Body, 1024)}, resp.Body, nil
}
