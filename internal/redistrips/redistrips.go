// Package redistrips counts the round trips to Redis that code makes
// through a rueidis client, for the tests that pin what an operation
// costs and for flowbench's figures.
//
// A round trip is one Do, DoCache, DoMulti or DoMultiCache: one wait for
// Redis's replies, whatever the commands it carries. A DoMulti of no
// command sends nothing (rueidis returns at once) and is not one.
package redistrips

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Client is a rueidis.Client that counts the round trips made through it
// (see Trips) and, with Record, keeps their commands (see Recorded).
// Its fields are set before its first use, and not changed after.
type Client struct {
	rueidis.Client
	// Record keeps the commands of each round trip, for Recorded. Off,
	// round trips are only counted, which costs a benchmark nothing but
	// an atomic add.
	Record bool
	// CountDedicated counts (and records) the round trips on the
	// connections Dedicate hands out too: a worker's heartbeats, and the
	// pub/sub connection's subscriptions, go on one.
	CountDedicated bool

	trips atomic.Int64
	mu    sync.Mutex
	log   [][]string // with Record: per round trip, each command's arguments joined by spaces
}

// Trips returns the round trips made through c so far.
func (c *Client) Trips() int64 { return c.trips.Load() }

// Recorded returns the commands of the round trips from the from-th on
// (an earlier Trips), each command as its arguments joined by spaces.
// It needs Record.
func (c *Client) Recorded(from int64) [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]string(nil), c.log[min(int(from), len(c.log)):]...)
}

// Naming returns the round trips of Recorded(from) one of whose
// commands contains s: those made for one task, when s is its id.
func (c *Client) Naming(from int64, s string) [][]string {
	var out [][]string
	for _, trip := range c.Recorded(from) {
		if slices.ContainsFunc(trip, func(cmd string) bool { return strings.Contains(cmd, s) }) {
			out = append(out, trip)
		}
	}
	return out
}

// Do is one round trip.
func (c *Client) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.count(cmd)
	return c.Client.Do(ctx, cmd)
}

// DoMulti is one round trip, unless cmds is empty.
func (c *Client) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	c.count(cmds...)
	return c.Client.DoMulti(ctx, cmds...)
}

// DoCache is one round trip.
func (c *Client) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	c.count(rueidis.Completed(cmd))
	return c.Client.DoCache(ctx, cmd, ttl)
}

// DoMultiCache is one round trip, unless multi is empty.
func (c *Client) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	cmds := make([]rueidis.Completed, len(multi))
	for i, m := range multi {
		cmds[i] = rueidis.Completed(m.Cmd)
	}
	c.count(cmds...)
	return c.Client.DoMultiCache(ctx, multi...)
}

// Dedicate returns a connection whose round trips c counts too, with
// CountDedicated.
func (c *Client) Dedicate() (rueidis.DedicatedClient, func()) {
	dc, release := c.Client.Dedicate()
	if !c.CountDedicated {
		return dc, release
	}
	return dedicated{dc, c}, release
}

// count counts one round trip of cmds, if there are any.
func (c *Client) count(cmds ...rueidis.Completed) {
	if len(cmds) == 0 {
		return
	}
	if !c.Record {
		c.trips.Add(1)
		return
	}
	trip := make([]string, len(cmds))
	for i, cmd := range cmds {
		trip[i] = strings.Join(cmd.Commands(), " ")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, trip)
	c.trips.Add(1) // with the record: Trips is an index into the log
}

// dedicated is a connection of a Client that counts its round trips. It
// is comparable: the backend compares the connections it holds.
type dedicated struct {
	rueidis.DedicatedClient
	c *Client
}

// Do is one round trip.
func (d dedicated) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	d.c.count(cmd)
	return d.DedicatedClient.Do(ctx, cmd)
}

// DoMulti is one round trip, unless cmds is empty.
func (d dedicated) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	d.c.count(cmds...)
	return d.DedicatedClient.DoMulti(ctx, cmds...)
}
