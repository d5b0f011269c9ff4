package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// askReroute asks the router to read the cluster's slots again and move
// every channel to the link of the master that serves it, starting the
// router on first use. It does nothing on a client that is not a Cluster
// client, or after the backend closed. h.mu is held.
func (h *hub) askReroute() {
	if !h.cluster || h.ctx.Err() != nil {
		return
	}
	if !h.routing {
		h.routing = true
		h.wg.Add(1)
		go h.router()
	}
	select {
	case h.reroute <- struct{}{}:
	default:
	}
}

// router reads the cluster's slots whenever asked (at the first
// subscription, when a connection is lost, when a slot moved) and routes
// every channel to the master that serves its slot. It reads at most once
// per reconnectMin, and backs off while the cluster leaves slots unserved
// (a failover under way) or cannot be read.
//
// The reads that fail in a row are one run of failures (see failRun):
// while no node of the cluster answers, the first is a warning, and so
// is one a minute; the read that goes through is an info line.
func (h *hub) router() {
	defer h.wg.Done()
	backoff := reconnectMin
	var unread failRun
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.reroute:
		}
		slots, masters, err := h.readSlots()
		h.mu.Lock()
		if err == nil {
			h.slots, h.masters = slots, masters
			for _, t := range h.topics {
				if t.link == nil || t.link.addr != slots[t.slot] {
					delete(h.unrouted, t.name)
					h.move(t)
				}
			}
			for _, l := range h.links {
				l.signal() // a link whose node lost its slots may retire
			}
		}
		again := err != nil || len(h.unrouted) > 0
		if again {
			h.askReroute()
		}
		h.mu.Unlock()
		if err != nil {
			unread.fail(h.log, "flows: cannot read the slots of the Redis cluster; retrying", "err", err, "retry_in", backoff)
		} else {
			unread.end(h.log, "flows: the slots of the Redis cluster are read again")
		}
		wait := reconnectMin
		if again {
			wait, backoff = backoff, min(2*backoff, reconnectMax)
		} else {
			backoff = reconnectMin
		}
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// readSlots asks the nodes the client knows, in turn, for the cluster's
// slots (CLUSTER SLOTS) until one answers, and returns the address of the
// master of each slot ("" for a slot no master serves) and the set of
// those masters.
func (h *hub) readSlots() ([]string, map[string]bool, error) {
	ctx, cancel := context.WithTimeout(h.ctx, h.opTimeout)
	defer cancel()
	errs := []error{errors.New("no node known")}
	for addr, node := range h.client.Nodes() {
		reply, err := node.Do(ctx, node.B().ClusterSlots().Build()).ToArray()
		if err == nil {
			var slots []string
			var masters map[string]bool
			if slots, masters, err = parseSlots(reply, addr); err == nil {
				return slots, masters, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, errors.Join(errs[1:]...)
}

// parseSlots reads a CLUSTER SLOTS reply of the node at from: each entry
// is a range of slots, its master's endpoint (an IP address, or "" for
// the node answering), port and id, then its replicas.
func parseSlots(reply []rueidis.RedisMessage, from string) ([]string, map[string]bool, error) {
	slots := make([]string, slotCount)
	masters := map[string]bool{}
	fromHost, _, _ := net.SplitHostPort(from)
	for _, entry := range reply {
		parts, err := entry.ToArray()
		if err != nil || len(parts) < 3 {
			return nil, nil, fmt.Errorf("malformed CLUSTER SLOTS entry: %v", err)
		}
		lo, err1 := parts[0].AsInt64()
		hi, err2 := parts[1].AsInt64()
		master, err3 := parts[2].ToArray()
		if err := errors.Join(err1, err2, err3); err != nil || len(master) < 2 || lo < 0 || hi >= slotCount || lo > hi {
			return nil, nil, fmt.Errorf("malformed CLUSTER SLOTS entry: %v", err)
		}
		host, _ := master[0].ToString()
		port, err := master[1].AsInt64()
		if err != nil {
			return nil, nil, fmt.Errorf("malformed CLUSTER SLOTS port: %w", err)
		}
		if host == "" || host == "?" {
			host = fromHost
		}
		addr := net.JoinHostPort(host, strconv.FormatInt(port, 10))
		masters[addr] = true
		for s := lo; s <= hi; s++ {
			slots[s] = addr
		}
	}
	return slots, masters, nil
}
