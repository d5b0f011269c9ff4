package redisbackend

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Bounds of the hub's reconnection backoff.
const (
	reconnectMin = 50 * time.Millisecond
	reconnectMax = 2 * time.Second
	// subscribeBatch bounds the channels of one SUBSCRIBE or UNSUBSCRIBE.
	subscribeBatch = 1000
)

// hub owns the one pub/sub connection of a Backend. Local listeners
// (inboxes) join channels; the hub subscribes each channel once, however
// many listeners it has, unsubscribes it when the last one leaves, and
// hands every message to the inboxes of its channel without blocking.
//
// A single goroutine (run) owns the connection: it reconciles the channels
// wanted with those subscribed, and after a lost connection reconnects,
// subscribes everything again and tells every inbox to resynchronise,
// since messages published meanwhile are lost.
type hub struct {
	client rueidis.Client
	log    *slog.Logger
	ctx    context.Context // ends when the backend closes
	wg     *sync.WaitGroup
	kick   chan struct{}
	// opTimeout bounds one command on the connection.
	opTimeout time.Duration

	mu      sync.Mutex
	started bool
	topics  map[string]*topic
	// pending holds the topics whose subscription is not confirmed yet.
	pending map[string]*topic
	// dropped holds channels whose last listener left, to unsubscribe.
	dropped map[string]struct{}
}

// topic is a channel with local listeners. ready is closed once the
// channel is subscribed on the hub's connection.
type topic struct {
	ready chan struct{}
	subs  map[*inbox]struct{}
}

func newHub(ctx context.Context, client rueidis.Client, log *slog.Logger, wg *sync.WaitGroup, opTimeout time.Duration) *hub {
	return &hub{
		client:    client,
		log:       log,
		ctx:       ctx,
		wg:        wg,
		kick:      make(chan struct{}, 1),
		opTimeout: opTimeout,
		topics:    map[string]*topic{},
		pending:   map[string]*topic{},
		dropped:   map[string]struct{}{},
	}
}

// join adds in to the listeners of channel and returns a channel that is
// closed once the hub's connection is subscribed to it: from then on,
// every message published on it reaches in. The hub starts on first use.
func (h *hub) join(channel string, in *inbox) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started && h.ctx.Err() == nil {
		h.started = true
		h.wg.Add(1)
		go h.run()
	}
	t, ok := h.topics[channel]
	if !ok {
		t = &topic{ready: make(chan struct{}), subs: map[*inbox]struct{}{}}
		h.topics[channel] = t
		h.pending[channel] = t
		h.signal()
	}
	t.subs[in] = struct{}{}
	return t.ready
}

// leave removes in from the listeners of channel.
func (h *hub) leave(channel string, in *inbox) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.topics[channel]
	if !ok {
		return
	}
	delete(t.subs, in)
	if len(t.subs) == 0 {
		delete(h.topics, channel)
		delete(h.pending, channel)
		h.dropped[channel] = struct{}{}
		h.signal()
	}
}

// signal wakes run without blocking.
func (h *hub) signal() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// onMessage is rueidis's hook for every message of the connection. It runs
// on rueidis's reading goroutine, so it only appends to inboxes.
func (h *hub) onMessage(m rueidis.PubSubMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.topics[m.Channel]; ok {
		for in := range t.subs {
			in.push(m.Message)
		}
	}
}

// run keeps a pub/sub connection up until the backend closes.
func (h *hub) run() {
	defer h.wg.Done()
	ctx := h.ctx

	backoff := reconnectMin
	for reconnect := false; ; reconnect = true {
		began := time.Now()
		dc, release := h.client.Dedicate()
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: h.onMessage})
		err := h.serve(ctx, dc, lost, reconnect)
		dc.Close() // a subscribed connection must not go back to the pool
		release()
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > reconnectMax {
			backoff = reconnectMin // it worked for a while
		}
		h.log.Warn("flows: redis pub/sub connection lost; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, reconnectMax)
	}
}

// serve subscribes the wanted channels on dc and keeps them in line with
// join and leave until the connection fails or ctx ends.
func (h *hub) serve(ctx context.Context, dc rueidis.DedicatedClient, lost <-chan error, reconnect bool) error {
	subscribed := map[string]bool{}
	full := true
	for {
		if err := h.reconcile(ctx, dc, subscribed, full, reconnect); err != nil {
			return err
		}
		full = false
		select {
		case <-h.kick:
		case err := <-lost:
			if err == nil {
				err = errors.New("connection closed")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reconcile subscribes the channels wanted and unsubscribes those no
// longer wanted. With full set (a new connection) it subscribes every
// wanted channel; when that connection replaces a lost one, every inbox is
// then told to resynchronise.
func (h *hub) reconcile(ctx context.Context, dc rueidis.DedicatedClient, subscribed map[string]bool, full, reconnect bool) error {
	var sub, unsub []string
	h.mu.Lock()
	wanted := h.pending
	if full {
		wanted = h.topics
	}
	for name := range wanted {
		if !subscribed[name] {
			sub = append(sub, name)
		}
	}
	for name, t := range h.pending {
		if subscribed[name] {
			close(t.ready)
			delete(h.pending, name)
		}
	}
	for name := range h.dropped {
		if _, live := h.topics[name]; !live && subscribed[name] {
			unsub = append(unsub, name)
		}
	}
	clear(h.dropped)
	h.mu.Unlock()

	for batch := range chunks(sub, subscribeBatch) {
		if err := h.do(ctx, dc, dc.B().Subscribe().Channel(batch...).Build()); err != nil {
			return err
		}
		h.mu.Lock()
		for _, name := range batch {
			subscribed[name] = true
			if t, ok := h.pending[name]; ok {
				close(t.ready)
				delete(h.pending, name)
			}
		}
		h.mu.Unlock()
	}
	if full && reconnect {
		h.mu.Lock()
		for _, t := range h.topics {
			for in := range t.subs {
				in.resync()
			}
		}
		h.mu.Unlock()
	}
	for batch := range chunks(unsub, subscribeBatch) {
		if err := h.do(ctx, dc, dc.B().Unsubscribe().Channel(batch...).Build()); err != nil {
			return err
		}
		for _, name := range batch {
			delete(subscribed, name)
		}
		// A listener may have joined one of these channels again while it
		// was being unsubscribed: look again.
		h.signal()
	}
	return nil
}

func (h *hub) do(ctx context.Context, dc rueidis.DedicatedClient, cmd rueidis.Completed) error {
	ctx, cancel := context.WithTimeout(ctx, h.opTimeout)
	defer cancel()
	return dc.Do(ctx, cmd).Error()
}

// chunks yields s in pieces of at most n.
func chunks(s []string, n int) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

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
