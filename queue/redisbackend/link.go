package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// link is one pub/sub connection of the hub, to the node at addr (any
// node of a client that is not a Cluster client: addr is then ""). One
// goroutine (run) owns the connection: it reconciles the channels
// assigned to the link with those subscribed, and after a lost connection
// reconnects, subscribes everything again and has every inbox
// resynchronise, since messages published meanwhile are lost.
//
// A link never unsubscribes a channel: rueidis follows each
// SUNSUBSCRIBE with a PING, and when Redis refuses that PING (MISCONF,
// while it cannot save to disk) rueidis takes the refusal for the
// SUNSUBSCRIBE's reply and panics on the next error reply of the
// connection, which ends the process. A channel no longer assigned
// stays subscribed, dead: the hub ignores its messages (a task's channel
// is nearly always silent once its watchers left, its task having
// ended). The link replaces its connection once dead channels pile up
// (see relink.go): a new one subscribes the channels assigned, then the
// old one is closed, which ends its subscriptions.
type link struct {
	h    *hub
	addr string
	kick chan struct{}

	// Guarded by h.mu.
	//
	// topics are the channels assigned to the link. pending are those of
	// them not yet subscribed on the current connection: true when their
	// inboxes must resynchronise once they are. dropped are channels no
	// longer assigned, still subscribed perhaps (dead).
	topics  map[string]*topic
	pending map[string]bool
	dropped map[string]struct{}
}

// conn is one connection of a link. Its goroutine (the link's run)
// alone reads and writes the fields before lost.
type conn struct {
	dc      rueidis.DedicatedClient
	release func()
	// closed reports the connection's end (see SetPubSubHooks).
	closed <-chan error
	// subscribed are the channels subscribed on the connection, to the
	// link's knowledge; dead those of them no longer assigned to the
	// link, since deadSince (zero when there is none).
	subscribed map[string]bool
	dead       map[string]struct{}
	deadSince  time.Time
	// retryAt is, after a replacement of the connection failed, when
	// another may be tried; replaceFails are the replacements that
	// failed in a row (see replaceFailed).
	retryAt      time.Time
	replaceFails failRun

	// Guarded by h.mu: lost are channels Redis unsubscribed unasked
	// (their slot moved to another node); hungUp is set once the link
	// closes the connection, whose hooks it ignores from then on.
	lost   map[string]struct{}
	hungUp bool
}

// errRetired ends the connection of a link that has no channel left and
// whose node serves no slot any more.
var errRetired = errors.New("link retired")

func newLink(h *hub, addr string) *link {
	return &link{
		h:       h,
		addr:    addr,
		kick:    make(chan struct{}, 1),
		topics:  map[string]*topic{},
		pending: map[string]bool{},
		dropped: map[string]struct{}{},
	}
}

// signal wakes run without blocking.
func (l *link) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// run keeps the link's connection up until the backend closes or, on a
// Cluster client, the link has no channel left after losing its
// connection or its node's slots.
//
// A lost connection and the reconnections that fail after it are one
// run of failures (see failRun): while Redis is down or refuses new
// connections, the loss is a warning, and so is one failure a minute;
// the reconnection that goes through is an info line.
func (l *link) run() {
	h := l.h
	defer h.wg.Done()
	backoff := reconnectMin
	var down failRun
	up := func() { down.end(h.log, "flows: redis pub/sub connection restored", "node", l.addr) }
	for reconnect := false; ; reconnect = true {
		if l.retire(reconnect) {
			return
		}
		began := time.Now()
		err := l.connect(reconnect, up)
		if h.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRetired) {
			continue
		}
		if time.Since(began) > reconnectMax {
			backoff = reconnectMin // it worked for a while
		}
		if h.cluster {
			h.mu.Lock()
			h.askReroute() // the node may be gone for good: read the slots again
			h.mu.Unlock()
		}
		down.fail(h.log, "flows: redis pub/sub connection lost; reconnecting", "node", l.addr, "err", err, "retry_in", backoff)
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, reconnectMax)
	}
}

// retire removes a link of a Cluster client that has no channel left from
// the hub, when it is not to connect again (after a lost connection) or
// its node serves no slot, and reports whether it did.
func (l *link) retire(reconnect bool) bool {
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.cluster || len(l.topics) > 0 || (!reconnect && h.masters[l.addr]) {
		return false
	}
	if h.links[l.addr] == l {
		delete(h.links, l.addr)
	}
	return true
}

// idle reports whether the link has no channel and its node serves no
// slot, on a Cluster client.
func (l *link) idle() bool {
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cluster && len(l.topics) == 0 && h.slots != nil && !h.masters[l.addr]
}

// connect opens a connection to the link's node and serves it until it
// fails, the backend closes or the link retires, calling up once the
// connection serves.
func (l *link) connect(reconnect bool, up func()) error {
	c, err := l.dial()
	if err != nil {
		return err
	}
	return l.serve(c, reconnect, up)
}

// dial opens a connection to the link's node, its messages going to the
// hub, or returns why it could not.
func (l *link) dial() (*conn, error) {
	h := l.h
	c := &conn{subscribed: map[string]bool{}, dead: map[string]struct{}{}, lost: map[string]struct{}{}}
	if h.cluster {
		node, ok := h.client.Nodes()[l.addr]
		if !ok {
			return nil, fmt.Errorf("node %s is not known to the client yet", l.addr)
		}
		c.dc, c.release = node.Dedicate()
	} else {
		c.dc, c.release = h.client.Dedicate()
	}
	c.closed = c.dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage:      h.onMessage,
		OnSubscription: func(s rueidis.PubSubSubscription) { l.onSubscription(c, s) },
	})
	select {
	case err := <-c.closed: // a connection that could not be opened reports its error at once
		l.hangUp(c)
		return nil, closedErr(err)
	default:
	}
	return c, nil
}

// closedErr is the error of a connection whose closed signal came with
// err.
func closedErr(err error) error {
	if err == nil {
		return errors.New("connection closed")
	}
	return err
}

// hangUp closes c, which ends its subscriptions, without sending any
// command that could unsubscribe (see link).
func (l *link) hangUp(c *conn) {
	l.h.mu.Lock()
	c.hungUp = true
	l.h.mu.Unlock()
	c.dc.Close() // first: a subscribed connection must not go back to the pool
	c.release()
}

// serve subscribes the link's channels on c and keeps them in line with
// the hub's assignments until the connection fails, the backend closes
// or the link retires, replacing the connection when its dead channels
// pile up. It calls up once the channels are subscribed. On a connection
// that replaces a lost one, every channel that was subscribed before has
// its inboxes resynchronise.
func (l *link) serve(c *conn, reconnect bool, up func()) error {
	h := l.h
	defer func() { l.hangUp(c) }() // the last connection, after replacements
	h.mu.Lock()
	for name, t := range l.topics {
		l.pending[name] = l.pending[name] || (reconnect && t.isReady)
	}
	clear(l.dropped) // none is subscribed on c
	h.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := true; ; first = false {
		if err := l.reconcile(c); err != nil {
			return err
		}
		if first {
			up()
		}
		if l.idle() {
			return errRetired
		}
		due, wait := l.replaceDue(c)
		if due {
			if next := l.replace(c); next != nil {
				c = next
				continue
			}
			_, wait = l.replaceDue(c) // c.retryAt
		}
		var tick <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-l.kick:
		case <-tick:
		case err := <-c.closed:
			return closedErr(err)
		case <-h.ctx.Done():
			return h.ctx.Err()
		}
		timer.Stop()
	}
}

// reconcile subscribes the channels pending on c, and counts the
// channels dropped that c holds subscribed as dead.
func (l *link) reconcile(c *conn) error {
	h := l.h
	var sub []string
	h.mu.Lock()
	for name := range c.lost {
		delete(c.subscribed, name)
		delete(c.dead, name)
	}
	clear(c.lost)
	for name, resync := range l.pending {
		if c.subscribed[name] {
			h.confirm(l.topics[name], resync)
			delete(l.pending, name)
			delete(c.dead, name) // joined again
		} else {
			sub = append(sub, name)
		}
	}
	for name := range l.dropped {
		if _, live := l.topics[name]; !live && c.subscribed[name] {
			c.dead[name] = struct{}{}
		}
	}
	clear(l.dropped)
	h.mu.Unlock()
	switch {
	case len(c.dead) == 0:
		c.deadSince = time.Time{}
	case c.deadSince.IsZero():
		c.deadSince = time.Now()
	}
	return l.subscribe(c, sub, true)
}

// subscribe sends SSUBSCRIBE for names on c, many commands per round
// trip, and confirms the channels pending among them when confirm is
// set. A channel whose slot another node serves now (MOVED) is routed
// there; any other refusal ends the connection, to be tried again after
// a backoff.
//
// On a Cluster client, ROLE follows the SSUBSCRIBEs on the connection
// (in their round trip, or in one of its own where rueidis takes no
// other command with them: a RESP2 connection), since a replica takes
// SSUBSCRIBE for the slots of its master but gets what its master
// publishes only once its master counts it as one of its replicas. A
// link's node may be a replica: a master that gave its last slot away
// turns itself into a replica of the master that took it while a node
// the hub read the slots from still names it, and a master that failed
// comes back as a replica. Such a link confirms nothing: the
// channels it subscribed move to the node's master, as after MOVED, and
// are dead here. Where ROLE is refused (an ACL without it), the link
// takes its node for a master.
func (l *link) subscribe(c *conn, names []string, confirm bool) error {
	h := l.h
	dc := c.dc
	groups := l.group(names)
	if len(groups) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(groups), len(groups)+1)
	for i, g := range groups {
		cmds[i] = dc.B().Ssubscribe().Channel(g...).Build()
	}
	if h.cluster {
		cmds = append(cmds, dc.B().Role().Build())
	}
	results := l.doMulti(dc, cmds)
	if h.cluster && slices.ContainsFunc(results, mixedInRESP2) {
		// A connection that speaks RESP2 (protocol=2, or one that could
		// not be dialled) takes no other command in the round trip of an
		// SSUBSCRIBE: rueidis refused those of the round trip with ROLE,
		// the last, without sending any. They go again, ROLE in a round
		// trip of its own; not those of the round trips before, which
		// went through and whose commands rueidis has recycled.
		var again rueidis.Commands
		var at []int
		for i, res := range results {
			if mixedInRESP2(res) {
				again, at = append(again, cmds[i]), append(at, i)
			}
		}
		role := len(again) - 1 // ROLE is the last command, refused with its round trip
		redo := append(l.doMulti(dc, again[:role]), l.doMulti(dc, again[role:])...)
		for k, i := range at {
			results[i] = redo[k]
		}
	}
	masterOf := "" // the node's master, when the node is a replica
	if h.cluster {
		var err error
		if masterOf, err = replicaOf(results[len(groups)]); err != nil {
			return err
		}
	}
	for i, res := range results[:len(groups)] {
		var movedTo string
		if err := res.Error(); err != nil {
			re, isReply := rueidis.IsRedisErr(err)
			if !isReply || !h.cluster {
				return err
			}
			var moved bool
			if movedTo, moved = re.IsMoved(); !moved {
				return err // CLUSTERDOWN and the like: try again later
			}
		} else {
			movedTo = masterOf
		}
		h.mu.Lock()
		for _, name := range groups[i] {
			if res.Error() == nil {
				c.subscribed[name] = true // on a replica too, to be dead
			}
			switch {
			case movedTo == "":
				if resync, ok := l.pending[name]; ok && confirm {
					delete(l.pending, name)
					h.confirm(l.topics[name], resync)
				}
			case l.topics[name] != nil:
				if h.slots != nil {
					h.slots[keySlot(name)] = movedTo
				}
				h.move(l.topics[name])
			}
		}
		if movedTo != "" {
			h.askReroute() // more slots may have moved
		}
		h.mu.Unlock()
	}
	return nil
}

// mixedInRESP2 reports whether rueidis refused res's command because it
// shared its round trip with an SSUBSCRIBE on a RESP2 connection.
func mixedInRESP2(res rueidis.RedisResult) bool {
	return errors.Is(res.Error(), rueidis.ErrRESP2PubSubMixed)
}

// replicaOf reads the reply of ROLE: the address of the node's master
// when the node is a replica, "" when it is a master or ROLE was refused.
func replicaOf(res rueidis.RedisResult) (string, error) {
	reply, err := res.ToArray()
	if _, refused := rueidis.IsRedisErr(err); refused {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ROLE: %w", err)
	}
	if len(reply) == 0 {
		return "", errors.New("ROLE: empty reply")
	}
	role, err := reply[0].ToString()
	if err != nil {
		return "", fmt.Errorf("ROLE: %w", err)
	}
	if role != "slave" && role != "replica" {
		return "", nil
	}
	if len(reply) < 3 {
		return "", fmt.Errorf("ROLE: %s reply of %d elements", role, len(reply))
	}
	host, err1 := reply[1].ToString()
	port, err2 := reply[2].AsInt64()
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("ROLE: %w", err)
	}
	return net.JoinHostPort(host, strconv.FormatInt(port, 10)), nil
}

// group splits channel names into the channels of one command each: of
// one slot on a Cluster client (a cluster refuses channels of several
// slots in one command), at most subscribeBatch.
func (l *link) group(names []string) [][]string {
	var groups [][]string
	if !l.h.cluster {
		for batch := range chunks(names, subscribeBatch) {
			groups = append(groups, batch)
		}
		return groups
	}
	bySlot := map[uint16][]string{}
	for _, name := range names {
		slot := keySlot(name)
		bySlot[slot] = append(bySlot[slot], name)
	}
	for _, g := range bySlot {
		for batch := range chunks(g, subscribeBatch) {
			groups = append(groups, batch)
		}
	}
	return groups
}

// doMulti sends cmds, subscribeBatch per round trip, and returns their
// results.
func (l *link) doMulti(dc rueidis.DedicatedClient, cmds rueidis.Commands) []rueidis.RedisResult {
	out := make([]rueidis.RedisResult, 0, len(cmds))
	for i := 0; i < len(cmds); i += subscribeBatch {
		ctx, cancel := context.WithTimeout(l.h.ctx, l.h.opTimeout)
		out = append(out, dc.DoMulti(ctx, cmds[i:min(i+subscribeBatch, len(cmds))]...)...)
		cancel()
	}
	return out
}

// onSubscription is rueidis's hook for subscription changes of c. The
// link sends no SUNSUBSCRIBE: one comes when Redis ended the
// subscription because the channel's slot moved to another node (on
// every connection subscribed to it), and the channel is routed again.
// Once the link hangs up c, c's hooks are ignored: what c held is the
// business of the connection that replaced it.
func (l *link) onSubscription(c *conn, s rueidis.PubSubSubscription) {
	if s.Kind != "sunsubscribe" {
		return
	}
	h := l.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.hungUp {
		return
	}
	c.lost[s.Channel] = struct{}{}
	if t := l.topics[s.Channel]; t != nil {
		if h.slots != nil && h.slots[t.slot] == l.addr {
			h.slots[t.slot] = "" // the new owner is not known yet
		}
		h.move(t)
	}
	h.askReroute()
	l.signal()
}

// chunks yields s in pieces of at most n.
func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}
