package redisbackend

import (
	"context"
	"time"

	"github.com/redis/rueidis"
)

// Bounds of the dead channels of a link's connection (see link): the
// link replaces its connection once it holds more dead channels than
// deadChannels or than the channels assigned to it, whichever is more,
// or once it has held some for deadChannelAge (a hub's deadLimit and
// deadAge, which tests change).
//
// The first bound keeps the replacements' cost in proportion: a
// replacement subscribes every channel assigned again, and removes at
// least as many dead ones. The second bounds how long a channel stays
// subscribed after its last watcher left: one whose task still runs
// (the watcher closed its page) keeps sending its messages until then,
// to be ignored.
const (
	deadChannels   = 1000
	deadChannelAge = time.Minute
)

// replaceDue reports whether c's dead channels call for its replacement
// now, and otherwise how long until they will if nothing changes (0: not
// at all).
func (l *link) replaceDue(c *conn) (due bool, wait time.Duration) {
	if len(c.dead) == 0 {
		return false, 0
	}
	h := l.h
	h.mu.Lock()
	assigned := len(l.topics)
	h.mu.Unlock()
	at := c.deadSince.Add(h.deadAge)
	if len(c.dead) > max(h.deadLimit, assigned) {
		at = time.Now()
	}
	if c.retryAt.After(at) {
		at = c.retryAt
	}
	if wait = time.Until(at); wait <= 0 {
		return true, 0
	}
	return false, wait
}

// replace opens a connection to replace old, one without its dead
// channels, and returns it, or nil (after logging why) when that failed:
// old then serves on, and a replacement is tried again after a backoff.
//
// The new connection subscribes every channel assigned to the link
// before old is closed, so that no message is missed and no inbox has
// to resynchronise: a message published in between comes on both, and
// reaches the inboxes twice (a subscription skips the events at or
// before its cursor; a cancellation is idempotent). The channels pending
// are confirmed only once the new connection serves (its reconcile),
// since a replacement that fails drops what it subscribed. If old may
// have stopped delivering before the new subscriptions (see delivered),
// messages may have been missed in between: the inboxes of the channels
// the new connection holds resynchronise.
func (l *link) replace(old *conn) *conn {
	h := l.h
	if h.onReplace != nil {
		h.onReplace()
	}
	next, err := l.dial()
	if err == nil {
		h.mu.Lock()
		names := make([]string, 0, len(l.topics))
		for name := range l.topics {
			names = append(names, name)
		}
		h.mu.Unlock()
		if err = l.subscribe(next, names, false); err != nil {
			l.hangUp(next)
		}
	}
	if err != nil {
		l.replaceFailed(old, err)
		return nil
	}
	if h.onOverlap != nil {
		h.onOverlap()
	}
	oldLost := !l.delivered(old)
	l.hangUp(old)
	if oldLost {
		h.mu.Lock()
		for name := range next.subscribed {
			if t := l.topics[name]; t != nil && t.isReady {
				h.confirm(t, true)
			}
		}
		h.mu.Unlock()
	}
	old.replaceFails.end(h.log, "flows: redis pub/sub connection replaced after failed tries", "node", l.addr,
		"dead_channels", len(old.dead))
	return next
}

// replaceFailed logs a failed replacement of c as one of a run of
// failures (see failRun), and has the next one tried after reconnectMax.
// c serves on meanwhile, but its dead channels pile up.
func (l *link) replaceFailed(c *conn, err error) {
	c.retryAt = time.Now().Add(reconnectMax)
	c.replaceFails.fail(l.h.log, "flows: replacing a redis pub/sub connection failed; trying again later", "node", l.addr, "err", err,
		"dead_channels", len(c.dead))
}

// delivered reports whether old has delivered every message published
// on its channels before now, the new connection being subscribed: it
// has not ended, and it answers a command sent now, whose reply comes
// after those messages. The command is an SSUBSCRIBE of a channel old
// holds, which changes nothing there and which Redis takes even while it
// refuses PING (MISCONF); on RESP2, rueidis sends it on the connection
// that holds the subscriptions, where a PING would go on another. A
// connection that died without a word, which rueidis notices only once
// its keep-alive fails, does not answer within the hub's opTimeout, and
// one killed is noticed a moment after other connections carried on: the
// closed signal alone would miss both.
func (l *link) delivered(old *conn) bool {
	select {
	case <-old.closed:
		return false
	default:
	}
	probe := ""
	for name := range old.subscribed {
		probe = name
		break
	}
	if probe == "" {
		return true // nothing to miss
	}
	ctx, cancel := context.WithTimeout(l.h.ctx, l.h.opTimeout)
	defer cancel()
	err := old.dc.Do(ctx, old.dc.B().Ssubscribe().Channel(probe).Build()).Error()
	_, isReply := rueidis.IsRedisErr(err) // MOVED, say: a reply all the same
	return err == nil || isReply
}
