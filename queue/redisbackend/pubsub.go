package redisbackend

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Bounds of the reconnection backoff of the hub's connections.
const (
	reconnectMin = 50 * time.Millisecond
	reconnectMax = 2 * time.Second
	// subscribeBatch bounds the channels of one SSUBSCRIBE, and the
	// commands sent in one round trip.
	subscribeBatch = 1000
)

// hub owns the pub/sub connections of a Backend. Local listeners
// (inboxes) join channels; the hub subscribes each channel once, however
// many listeners it has, and hands every message to the inboxes of its
// channel without blocking. A channel whose last listener left stays
// subscribed for a while, its messages ignored, until its connection is
// replaced by one without it (see link): the hub never sends
// SUNSUBSCRIBE, which rueidis cannot follow while Redis refuses PING.
//
// Every channel is a shard channel (SSUBSCRIBE; the scripts publish with
// SPUBLISH), which Redis Cluster routes by the channel's hash slot as it
// routes keys: a task's live channel is on the node of the task's keys,
// a queue's cancellation channel on the node of the queue's. The hub
// holds one connection (a link) per node that serves its channels: one in
// all against a single Redis or through Sentinel, at most one per master
// of a cluster, however many channels and listeners there are.
//
// On a Cluster client the hub reads which master serves each slot
// (CLUSTER SLOTS) and assigns each channel to that master's link. When a
// slot moves (a resharding, a failover), Redis ends the subscriptions of
// its channels on the old master (an SUNSUBSCRIBE it sends unasked), or
// answers a new SSUBSCRIBE with MOVED, or the old master's connection is
// lost: the hub then reads the slots again, moves the channels to their
// new master's link and, once they are subscribed there, tells their
// inboxes to resynchronise, since messages published meanwhile were
// missed.
type hub struct {
	client rueidis.Client
	log    *slog.Logger
	ctx    context.Context // ends when the backend closes
	wg     *sync.WaitGroup
	// opTimeout bounds one command on a connection.
	opTimeout time.Duration
	// cluster is set for a Cluster client: channels are routed by slot.
	cluster bool
	// deadLimit and deadAge bound the dead channels of a link's
	// connection (see deadChannels).
	deadLimit int
	deadAge   time.Duration
	// onReplace, onOverlap and onResync, set by tests only, are called
	// as each replacement of a connection begins (before the new one is
	// dialled), during it while the old one and the new one are both
	// subscribed (see replace), and for each channel whose inboxes are
	// told to resynchronise.
	onReplace func()
	onOverlap func()
	onResync  func(channel string)

	mu     sync.Mutex
	topics map[string]*topic
	// links are the connections, by the address of their node ("" for
	// the one connection of a client that is not a Cluster client).
	links map[string]*link
	// slots is the cluster's master address of each slot, nil until
	// read; unrouted holds the topics waiting for it (Cluster client
	// only).
	slots    []string
	masters  map[string]bool
	unrouted map[string]*topic
	// routing is set while the router goroutine runs; reroute asks it
	// to read the slots again.
	routing bool
	reroute chan struct{}
}

// topic is a channel with local listeners. ready is closed once the
// channel is first subscribed.
type topic struct {
	name     string
	slot     uint16
	ready    chan struct{}
	subs     map[*inbox]struct{}
	isReady  bool
	link     *link // nil while unrouted
	isClosed bool
}

func newHub(ctx context.Context, client rueidis.Client, cluster bool, log *slog.Logger, wg *sync.WaitGroup, opTimeout time.Duration) *hub {
	return &hub{
		client:    client,
		log:       log,
		ctx:       ctx,
		wg:        wg,
		opTimeout: opTimeout,
		cluster:   cluster,
		deadLimit: deadChannels,
		deadAge:   deadChannelAge,
		topics:    map[string]*topic{},
		links:     map[string]*link{},
		unrouted:  map[string]*topic{},
		reroute:   make(chan struct{}, 1),
	}
}

// join adds in to the listeners of channel and returns a channel that is
// closed once a connection of the hub is subscribed to it: from then on,
// every message published on it reaches in (and if a move or a lost
// connection makes the hub miss messages, in is told to resynchronise).
// The hub's goroutines start on first use.
func (h *hub) join(channel string, in *inbox) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.topics[channel]
	if !ok {
		t = &topic{name: channel, slot: keySlot(channel), ready: make(chan struct{}), subs: map[*inbox]struct{}{}}
		h.topics[channel] = t
		h.route(t, false)
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
		delete(h.unrouted, channel)
		t.isClosed = true
		h.unassign(t)
	}
}

// route assigns t to the link of its node, starting the link if need be,
// to be subscribed there; resync asks for its inboxes to resynchronise
// once it is. On a Cluster client whose slot map is not known yet, t
// waits for the router. h.mu is held.
func (h *hub) route(t *topic, resync bool) {
	if h.ctx.Err() != nil {
		return // closed: nothing is started any more
	}
	addr := ""
	if h.cluster {
		if h.slots != nil {
			addr = h.slots[t.slot]
		}
		if addr == "" {
			h.unrouted[t.name] = t
			h.askReroute()
			return
		}
	}
	l, ok := h.links[addr]
	if !ok {
		l = newLink(h, addr)
		h.links[addr] = l
		h.wg.Add(1)
		go l.run()
	}
	t.link = l
	l.topics[t.name] = t
	l.pending[t.name] = l.pending[t.name] || resync
	l.signal()
}

// unassign takes t from its link, whose connection holds it dead from
// then on. h.mu is held.
func (h *hub) unassign(t *topic) {
	l := t.link
	if l == nil {
		return
	}
	t.link = nil
	delete(l.topics, t.name)
	delete(l.pending, t.name)
	l.dropped[t.name] = struct{}{}
	l.signal()
}

// move routes t again, to the master that serves its slot now, and has
// its inboxes resynchronise once it is subscribed there. h.mu is held.
func (h *hub) move(t *topic) {
	if t.isClosed {
		return
	}
	h.unassign(t)
	h.route(t, t.isReady)
}

// confirm records that t is subscribed on its link's connection. h.mu is
// held.
func (h *hub) confirm(t *topic, resync bool) {
	if !t.isReady {
		t.isReady = true
		close(t.ready)
	}
	if resync {
		if h.onResync != nil {
			h.onResync(t.name)
		}
		for in := range t.subs {
			in.resync()
		}
	}
}

// onMessage is rueidis's hook for every message of a connection. It runs
// on rueidis's reading goroutine, so it only appends to inboxes. A
// message that comes from a link t has just left is delivered too: a
// subscription skips what it has had already.
func (h *hub) onMessage(m rueidis.PubSubMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.topics[m.Channel]; ok {
		for in := range t.subs {
			in.push(m.Message)
		}
	}
}
