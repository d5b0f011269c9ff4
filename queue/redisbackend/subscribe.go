package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// A live message is what appendScript publishes for each Append: a line
// with the id of the event before the first one ("" when there is none),
// a space and the id of the last one, then the events' JSON, one line
// each, as in the event log's element of that Append (see eventBatch):
// the ids of the events before the last one precede it.
//
//	3-0-k3x9 4-1-0fa2
//	{"type":"progress","progress":40}
//	{"type":"status","status":"Writing"}
//
// Each message thus names the event before it, so that a subscriber sees
// a gap, and one message carries a whole batch. A writer of an earlier
// version publishes ids without tags ("3-0 4-1"): the subscriber gives
// the events the tag of their element, which the message holds as
// stored.
//
// The message goneMessage says that the task's keys were deleted (see
// deleteTask): its subscriptions read the event log, find the task gone
// and end. (A subscriber of an earlier version logs it as undecodable,
// then does the same.)

// goneMessage is the live message published when a task is deleted.
const goneMessage = "gone"

// Subscribe implements progress.Subscriber. The subscription shares the
// backend's one pub/sub connection. A goroutine works for it only while
// it has something to do: first to read the backlog, then whenever live
// messages arrive (or the poll interval passes, or the pub/sub connection
// was restored) and until they are delivered, reading the event log again
// whenever a message shows a gap. Each read of the event log also reads
// how long the task's keys have left to live (a PTTL in the same round
// trip), and the subscription reads again when that time has passed, if
// that comes before the poll interval: a task whose retention passes
// while it is watched ends its subscription then, not up to a poll
// interval later. An idle subscription holds no goroutine,
// which keeps thousands of open event streams cheap. When Redis cannot be
// reached the subscription waits and retries rather than ending. It also
// ends when the backend closes.
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
	// The task's state, and the size of its events list, by which the
	// first read of the backlog takes as many elements as fit its
	// budget (see elementSize).
	opCtx, cancel := b.bound(ctx, 0)
	var fields [3]string
	reply, err := b.client.Do(opCtx, b.client.B().Hmget().Key(b.taskKey(taskID)).Field(fieldState, fieldEventBytes, fieldLast).Build()).ToMessage()
	if err == nil {
		err = hmgetValues(reply, fields[:])
	}
	err = b.wrap(opCtx, "subscribe to task "+taskID, err)
	cancel()
	if err != nil {
		return nil, err
	}
	if fields[0] == "" {
		return nil, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}

	s := &subscription{
		b:       b,
		taskID:  taskID,
		channel: b.liveChannel(taskID),
		cursor:  after,
		out:     make(chan progress.Event),
		running: true, // the first goroutine, started below
	}
	s.size.setHint(fields[1], fields[2])
	s.in = newWakingInbox(s.kick)
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.unlinkBackend = context.AfterFunc(b.ctx, s.cancel)
	s.unlinkWake = context.AfterFunc(s.ctx, s.kick)
	ready := b.hub.join(s.channel, s.in)
	b.wg.Add(1) // until finish
	go s.start(ready)
	return s.out, nil
}

// subscription is one Subscribe call: cursor is the id of the last event
// delivered (or the afterID it started from), placed is set once a read
// of the events list has found it there (see catchUp). At most one
// goroutine works for it at a time (running); a wake-up while it works
// makes it go round again (again). Only that goroutine touches cursor,
// placed, size, expires and poll.
type subscription struct {
	b       *Backend
	taskID  string
	channel string
	cursor  eventID
	placed  bool
	size    elementSize // of the elements read next
	in      *inbox
	out     chan progress.Event
	poll    *time.Timer // resynchronises after PollInterval without news
	// expires is when the task's hash expires unless written to again,
	// as the last read of the event log found it (zero: no expiry).
	expires time.Time

	// ctx ends with the caller's context or the backend.
	ctx                       context.Context
	cancel                    context.CancelFunc
	unlinkBackend, unlinkWake func() bool

	mu      sync.Mutex
	running bool
	again   bool
}

// kick makes sure a goroutine looks at the subscription: its inbox has
// something, or its context ended. It never blocks.
func (s *subscription) kick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		s.again = true
		return
	}
	s.running = true
	go s.work()
}

// start waits for the live channel, delivers the backlog, then works as
// work does. Live messages reach the inbox from the moment the channel is
// subscribed; the backlog is read only after that, so nothing falls
// between.
func (s *subscription) start(ready <-chan struct{}) {
	select {
	case <-ready:
	case <-s.ctx.Done():
		s.finish()
		return
	}
	if s.catchUp(s.ctx) {
		s.finish()
		return
	}
	s.poll = time.AfterFunc(s.nextRead(), s.in.resync)
	s.work()
}

// work handles what the inbox holds until it is empty, then lets the
// goroutine go, unless the subscription is over.
func (s *subscription) work() {
	for {
		if s.step() {
			s.finish()
			return
		}
		s.mu.Lock()
		if !s.again {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.again = false
		s.mu.Unlock()
	}
}

// step handles the messages in the inbox and reports whether the
// subscription is over.
func (s *subscription) step() bool {
	if s.ctx.Err() != nil {
		return true
	}
	msgs, stale := s.in.take()
	if stale && s.catchUp(s.ctx) {
		return true
	}
	for _, raw := range msgs {
		done, ok := s.live(s.ctx, raw)
		if !done && !ok {
			done = s.catchUp(s.ctx)
		}
		if done {
			return true
		}
	}
	s.poll.Reset(s.nextRead())
	return false
}

// nextRead is how long the subscription waits without news before it
// reads the event log: the poll interval, or less when the task's hash
// expires before (a millisecond after, when Redis will have dropped it).
// A write may have moved the expiry since the last read: the read then
// finds the task, and the new expiry.
func (s *subscription) nextRead() time.Duration {
	d := s.b.cfg.PollInterval
	if !s.expires.IsZero() {
		d = min(d, time.Until(s.expires)+time.Millisecond)
	}
	return d
}

// finish ends the subscription for good. It runs once, on the goroutine
// working for it, which keeps running set so that no other starts.
func (s *subscription) finish() {
	if s.poll != nil {
		s.poll.Stop()
	}
	s.unlinkWake()
	s.unlinkBackend()
	s.cancel()
	s.b.hub.leave(s.channel, s.in)
	close(s.out)
	s.b.wg.Done()
}

// live handles one published message (see above): each event at or
// before the cursor is dropped, each event right after it is delivered.
// ok is false when the message cannot be used (a gap before an event, an
// event of the cursor's element with another tag, or garbage): then the
// event log must be read. done reports that the subscription is over.
func (s *subscription) live(ctx context.Context, raw string) (done, ok bool) {
	if raw == goneMessage {
		return false, false // the event log tells
	}
	header, events, _ := strings.Cut(raw, "\n")
	prevText, lastText, found := strings.Cut(header, " ")
	prev, err := parseEventID(prevText)
	last, err2 := parseEventID(lastText)
	if !found || err != nil || err2 != nil || last.isZero() {
		s.b.log.Warn("flows: undecodable live message", "task_id", s.taskID, "err", errors.Join(err, err2))
		return false, false
	}
	if last.tag == "" {
		// A writer of an earlier version's: its events get the tag of
		// their element, which the message carries as stored, as a read
		// of the event log gives them, so that a subscriber resuming
		// from one is found.
		last.tag = elementTag(events)
	}
	err = eventBatch{last: last, events: events}.each(func(id eventID, data string) error {
		if id.conflicts(s.cursor) {
			return errGap // the event log tells whether it diverged
		}
		if id.compare(s.cursor) > 0 {
			if !prev.is(s.cursor) {
				return errGap
			}
			e, err := decodeEvent(id, data)
			if err != nil {
				return err
			}
			if !s.deliver(ctx, e) {
				done = true
				return errBreak
			}
		}
		prev = id
		return nil
	})
	if err != nil {
		if err != errGap {
			s.b.log.Warn("flows: undecodable live message", "task_id", s.taskID, "err", err)
		}
		return false, false
	}
	return done, true
}

// errGap stops the reading of a live message whose first new event does
// not follow the cursor: the event log has what is missing.
var errGap = errors.New("gap before the live message")

// catchUp delivers every stored event after the cursor. It reports
// whether the subscription is over: terminal event delivered, task gone,
// ctx ended, or the events list is not the one the cursor was found in
// (see page.diverged). While Redis cannot be reached it retries.
//
// A cursor that is not in the list is an id of events that a failover
// lost: the subscriber has folded them into what it shows, those up to
// the cursor at least (the afterID of Subscribe is the id of what the
// subscriber read, its Snapshot or Events, before). The subscription
// ends, without the terminal event, and without delivering the new
// log's events from the first: the subscriber would fold them onto the
// lost ones, and cannot tell them from events after its id. It reads
// the task again (an event stream of package ssehttp ends, its client
// reconnects, and the stream finds the client's id not in the log and
// starts from the first event). That holds for the afterID too, which
// the subscriber may have read from this Redis just before a failover
// that lands before this first read (placed is not set yet); it is then
// logged at Debug only, since the subscription delivered nothing.
//
// So each page after the first reads again the element the page before
// ended with, though its events were all delivered: that element's tag
// is what tells a log replaced between the two reads (a failover that
// lost it, then appends that took its place and the ones after) from
// the same log grown. A page from the next element would find only the
// new log's elements, and deliver them as if they followed the lost ones
// (TestCatchUpChecksTheLogBetweenPages). No cheaper read tells it: Redis
// has no command that returns less of a list element than all of it,
// and an element holds no tag of the one before.
func (s *subscription) catchUp(ctx context.Context) bool {
	backoff := reconnectMin
	for {
		p, err := s.b.readEvents(ctx, s.taskID, s.cursor, s.size.count(s.cursor), true)
		switch {
		case errTaskGone(err):
			return true
		case err == nil && p.diverged:
			if s.placed {
				s.b.replaced.ended(s.b.log, s.taskID, s.cursor)
			} else {
				s.b.log.Debug("flows: a subscription after an id of events a Redis failover lost ends at once",
					"task_id", s.taskID, "after", s.cursor.String())
			}
			return true
		case err != nil:
			if s.wait(ctx, &backoff, err) {
				return true
			}
			continue
		}
		s.placed = true
		s.size.observe(p)
		s.expires = time.Time{}
		if p.ttl != noExpiry {
			// Measured once the reply is here: not before Redis's own
			// expiry time.
			s.expires = time.Now().Add(p.ttl)
		}
		// Delivered page by page, each event as it is decoded: a
		// page's bytes are about readBudget at most (see elementSize).
		delivered := 0
		over, err := p.each(func(e progress.Event) bool {
			delivered++
			return s.deliver(ctx, e)
		})
		if over {
			return true
		}
		if err != nil {
			// Garbage in the list: logged, and read again (from the
			// cursor, past what was delivered) after the backoff.
			if s.wait(ctx, &backoff, fmt.Errorf("redisbackend: read events of task %q: %w", s.taskID, err)) {
				return true
			}
			continue
		}
		if p.more && delivered > 0 {
			continue
		}
		return p.terminal
	}
}

// wait logs that reading the event log failed with err and waits for the
// backoff, which it doubles (up to reconnectMax). It reports whether ctx
// ended first.
func (s *subscription) wait(ctx context.Context, backoff *time.Duration, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	s.b.log.Debug("flows: reading events failed; retrying", "task_id", s.taskID, "err", err)
	select {
	case <-ctx.Done():
		return true
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, reconnectMax)
	return false
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

// replacedLog logs the subscriptions that end because the events they
// delivered were replaced (see catchUp). A failover that lost events ends
// every open subscription of the tasks that wrote in its window, which
// may be thousands of event streams at once: one Info line each would be
// a burst that says the same thing thousands of times (and the failover
// itself is logged, as the pub/sub connection lost). Each is logged at
// Debug, with its task; at Info, the first, and then at most one line per
// replacedLogEvery, with the count of those that ended since the last
// one.
type replacedLog struct {
	mu    sync.Mutex
	last  time.Time // of the last Info line
	since int       // ended and not yet counted by an Info line
}

// replacedLogEvery is the least time between two Info lines of
// replacedLog.
const replacedLogEvery = time.Minute

// ended logs that the subscription of taskID, after cursor, ended.
func (r *replacedLog) ended(log *slog.Logger, taskID string, cursor eventID) {
	log.Debug("flows: the events a subscription delivered are not the task's any more (a Redis failover lost them); it ends, to be resumed from the first event",
		"task_id", taskID, "after", cursor.String())
	r.mu.Lock()
	r.since++
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < replacedLogEvery {
		r.mu.Unlock()
		return
	}
	n := r.since
	r.since, r.last = 0, now
	r.mu.Unlock()
	log.Info("flows: the events some subscriptions delivered are not their tasks' any more (a Redis failover lost them); they end, to be resumed from the first event (one line a minute at most, each subscription at Debug)",
		"subscriptions", n, "task_id", taskID)
}
