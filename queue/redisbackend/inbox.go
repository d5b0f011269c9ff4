package redisbackend

import "sync"

// inboxLimit bounds the messages an inbox buffers. Past it, an inbox drops
// its buffer and asks its reader to resynchronise from the event log,
// which holds every event anyway: memory stays bounded and nothing is lost.
// It is a variable for tests only.
var inboxLimit = 10000

// inbox buffers the messages of one listener until it takes them. push
// never blocks.
type inbox struct {
	// unbounded inboxes never drop messages (for listeners that have no
	// event log to read again).
	unbounded bool

	// onWake, when set, is called on every push and resync, instead of
	// a signal on notify (which is nil then). It must not block.
	onWake func()

	mu     sync.Mutex
	msgs   []string
	stale  bool // messages may have been missed: read the stream
	notify chan struct{}
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{}, 1)} }

// newWakingInbox returns an inbox that calls onWake when it has something
// to take, for a listener with no goroutine of its own waiting on it.
func newWakingInbox(onWake func()) *inbox { return &inbox{onWake: onWake} }

func (in *inbox) push(msg string) {
	in.mu.Lock()
	if !in.unbounded && len(in.msgs) >= inboxLimit {
		in.msgs, in.stale = nil, true
	} else {
		in.msgs = append(in.msgs, msg)
	}
	in.mu.Unlock()
	in.wake()
}

// resync tells the reader that messages may have been missed.
func (in *inbox) resync() {
	in.mu.Lock()
	in.stale = true
	in.mu.Unlock()
	in.wake()
}

func (in *inbox) wake() {
	if in.onWake != nil {
		in.onWake()
		return
	}
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// take returns the buffered messages and whether a resync was asked for,
// and empties the inbox.
func (in *inbox) take() (msgs []string, stale bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	msgs, stale = in.msgs, in.stale
	in.msgs, in.stale = nil, false
	return msgs, stale
}
