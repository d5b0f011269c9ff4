package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
)

// followed is what an eventSource saw of one task's stream, across all its
// connections.
type followed struct {
	// IDs are the ids of the messages it dispatched, in order ("" for the
	// PENDING snapshot before the first event).
	IDs []string
	// Last is the last snapshot it received.
	Last progress.Snapshot
	// Connections counts the stream requests it made, refused ones
	// included; Answers are the statuses of those that got one, in order.
	Connections int
	Answers     []int
	// End is the status that ended it: 200 after a terminal snapshot, 204
	// when the server said the client had seen the end, or the error
	// status it gave up on (an EventSource fails on any status but 200 and
	// 204); 0 when ctx ended first.
	End int
	// EndBody is the body of an error answer that ended it.
	EndBody string
}

// String describes f for failure messages.
func (f followed) String() string {
	return fmt.Sprintf("%d messages, last state %s, %d connections (answers %v), ended by %d %s",
		len(f.IDs), f.Last.State, f.Connections, f.Answers, f.End, strings.TrimSpace(f.EndBody))
}

// eventSource follows the stream of task taskID on the server at baseURL
// as a browser's EventSource does: it reconnects whenever a connection
// fails or ends, after the server's retry hint, sending the id of the last
// message it saw in the Last-Event-ID header; it stops after a terminal
// snapshot, on 204, on any other status but 200, or when ctx ends.
// onMessage, when not nil, is called with the id of each message it
// dispatches.
func eventSource(ctx context.Context, baseURL, taskID string, onMessage func(id string)) followed {
	var (
		f      followed
		lastID string
		retry  = 200 * time.Millisecond
	)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	for {
		f.Connections++
		done := f.connect(ctx, client, baseURL+"/task-status/"+taskID+"/", &lastID, &retry, onMessage)
		if done || ctx.Err() != nil {
			return f
		}
		select {
		case <-ctx.Done():
			return f
		case <-time.After(retry):
		}
	}
}

// connect makes one stream request and reads the stream until it ends. It
// reports whether the client is done.
func (f *followed) connect(ctx context.Context, client *http.Client, url string, lastID *string, retry *time.Duration, onMessage func(string)) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if *lastID != "" {
		req.Header.Set("Last-Event-ID", *lastID)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false // refused, or reset: try again
	}
	defer resp.Body.Close()
	f.Answers = append(f.Answers, resp.StatusCode)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		f.End = resp.StatusCode
		return true
	default:
		var body strings.Builder
		buf := make([]byte, 1024)
		n, _ := resp.Body.Read(buf)
		body.Write(buf[:n])
		f.End, f.EndBody = resp.StatusCode, body.String()
		return true
	}
	r := sse.NewReader(resp.Body)
	for {
		m, err := r.Next()
		if err != nil {
			return false // the connection ended: reconnect
		}
		if ms, err := strconv.Atoi(m.Retry); err == nil {
			*retry = time.Duration(ms) * time.Millisecond
		}
		*lastID = r.LastEventID()
		if !m.HasData {
			continue
		}
		f.IDs = append(f.IDs, *lastID)
		if onMessage != nil {
			onMessage(*lastID)
		}
		if m.Event != "" {
			continue
		}
		var s progress.Snapshot
		if err := json.Unmarshal([]byte(m.Data), &s); err != nil {
			f.EndBody = "undecodable snapshot: " + m.Data
			return true
		}
		f.Last = s
		if s.State.Terminal() {
			f.End = http.StatusOK
			return true
		}
	}
}
