package redisbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// liveMessage is what appendScript publishes for each event.
type liveMessage struct {
	ID    string          `json:"id"`
	Prev  string          `json:"prev"`
	Event json.RawMessage `json:"event"`
}

// Subscribe implements progress.Subscriber. The subscription shares the
// backend's one pub/sub connection; its own goroutine reads the backlog,
// then follows live events, reading the stream again whenever a message
// shows a gap or the connection was restored. When Redis cannot be reached
// the subscription waits and retries rather than ending. It also ends when
// the backend closes.
func (b *Backend) Subscribe(ctx context.Context, taskID, afterID string) (<-chan progress.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after, err := parseEventID(afterID)
	if err != nil {
		return nil, err
	}
	if !queue.ValidID(taskID) {
		return nil, fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	if b.closed() {
		return nil, ErrClosed
	}
	opCtx, cancel := b.bound(ctx, 0)
	n, err := b.client.Do(opCtx, b.client.B().Exists().Key(b.snapKey(taskID)).Build()).AsInt64()
	err = b.wrap(opCtx, "subscribe to task "+taskID, err)
	cancel()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}

	s := &subscription{
		b:       b,
		taskID:  taskID,
		channel: b.liveChannel(taskID),
		cursor:  after,
		in:      newInbox(),
		out:     make(chan progress.Event),
	}
	ready := b.hub.join(s.channel, s.in)
	b.wg.Add(1)
	go s.run(ctx, ready)
	return s.out, nil
}

// subscription is one Subscribe call: cursor is the id of the last event
// delivered (or the afterID it started from).
type subscription struct {
	b       *Backend
	taskID  string
	channel string
	cursor  eventID
	in      *inbox
	out     chan progress.Event
}

func (s *subscription) run(ctx context.Context, ready <-chan struct{}) {
	defer s.b.wg.Done()
	defer close(s.out)
	defer s.b.hub.leave(s.channel, s.in)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.b.ctx, cancel)()

	// Live messages reach the inbox from now on; the backlog is read
	// only after the channel is subscribed, so nothing falls between.
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	if s.catchUp(ctx) {
		return
	}
	poll := time.NewTimer(s.b.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.in.notify:
		case <-poll.C:
			s.in.resync()
		}
		msgs, stale := s.in.take()
		if stale {
			if s.catchUp(ctx) {
				return
			}
		}
		for _, raw := range msgs {
			done, ok := s.live(ctx, raw)
			if !done && !ok {
				done = s.catchUp(ctx)
			}
			if done {
				return
			}
		}
		poll.Reset(s.b.cfg.PollInterval)
	}
}

// live handles one published message: an event at or before the cursor is
// dropped, the event right after it is delivered. ok is false when the
// message cannot be used (a gap before it, or garbage): then the stream
// must be read. done reports that the subscription is over.
func (s *subscription) live(ctx context.Context, raw string) (done, ok bool) {
	var m liveMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		s.b.log.Warn("flows: undecodable live event", "task_id", s.taskID, "err", err)
		return false, false
	}
	id, err := parseEventID(m.ID)
	if err != nil {
		return false, false
	}
	if id.compare(s.cursor) <= 0 {
		return false, true // already delivered
	}
	prev, err := parseEventID(m.Prev)
	if err != nil || prev != s.cursor {
		return false, false // a gap: the stream has what is missing
	}
	var e progress.Event
	if err := json.Unmarshal(m.Event, &e); err != nil {
		return false, false
	}
	e.ID = m.ID
	return !s.deliver(ctx, e), true
}

// catchUp delivers every stored event after the cursor. It reports
// whether the subscription is over: terminal event delivered, task gone,
// or ctx ended. While Redis cannot be reached it retries.
func (s *subscription) catchUp(ctx context.Context) bool {
	backoff := reconnectMin
	for {
		events, terminal, err := s.b.readPage(ctx, s.taskID, s.cursor, pageSize)
		switch {
		case errTaskGone(err):
			return true
		case err != nil:
			if ctx.Err() != nil {
				return true
			}
			s.b.log.Debug("flows: reading events failed; retrying", "task_id", s.taskID, "err", err)
			select {
			case <-ctx.Done():
				return true
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, reconnectMax)
			continue
		}
		for _, e := range events {
			if !s.deliver(ctx, e) {
				return true
			}
		}
		if len(events) == pageSize {
			continue
		}
		return terminal
	}
}

// deliver sends e and moves the cursor. It returns false when the
// subscription is over (e was terminal, or ctx ended first).
func (s *subscription) deliver(ctx context.Context, e progress.Event) bool {
	id, err := parseEventID(e.ID)
	if err != nil {
		return true
	}
	select {
	case s.out <- e:
	case <-ctx.Done():
		return false
	}
	s.cursor = id
	return !e.Terminal()
}
