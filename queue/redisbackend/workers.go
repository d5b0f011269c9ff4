package redisbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

var _ queue.WorkerRegistry = (*Backend)(nil)

// The worker registry of a queue is two keys under its hash tag: the
// workers hash (worker name -> the JSON of its queue.WorkerInfo, without
// LastSeen) and the workers:seen sorted set (worker name, scored by the
// Unix ms of its last heartbeat by the server's clock). A heartbeat is
// one script that writes both; a worker that retires leaves both; one
// that has not beaten for queue.ForgetWorkerAfter is forgotten by the
// next Workers. Whoever takes over the tasks of dead workers finds them
// in the set by score (ZRANGEBYSCORE up to a time), at a cost that does
// not grow with the live ones.

// Heartbeat implements queue.WorkerRegistry in one round trip: one
// script, whatever the number of tasks the worker runs. The same script
// takes back the leases of the workers it finds dead (see reclaim.go).
// Once per sweepEvery and process, the round trip also looks for starts
// cut between their steps, and ends their tasks (see starts.go), which
// costs round trips only when it finds some; and the script for entries
// pending with no lease, which it takes back (see reclaim.go).
//
// The script goes on a connection of its own (see beatLine), not on the
// connection that the client's other commands share: there it would wait
// behind every request sent before it, megabytes of a flow's reports
// among them, and a worker whose link takes seconds over those would
// miss its heartbeats and stop its flows (see queue.WorkerConfig.Heartbeat)
// while Redis answered all along.
func (b *Backend) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	w.LastSeen = time.Time{}
	info, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("redisbackend: heartbeat of worker %s: %w", w.Name, err)
	}
	opCtx, cancel := b.bound(ctx, 0)
	defer cancel()
	now := time.Now()
	due := b.sweep.due(now)
	keys, args := b.heartbeatCall(w, string(info), due)
	c := b.beats.get(b)
	var sweep []rueidis.RedisResult
	if due {
		var reply rueidis.RedisResult
		_, reply, sweep = b.runScriptOn(opCtx, c, nil, heartbeatScript, waitNever, keys, args, b.sweepCommands(now))
		err = reply.Error()
		if out, _ := reply.ToArray(); err == nil && len(out) > 2 {
			msg, _ := out[2].ToString()
			b.log.Warn("flows: the sweep for entries pending with no lease failed", "worker", w.Name, "err", msg)
		}
	} else {
		err = heartbeatScript.exec(opCtx, c, keys, args).Error()
	}
	if err != nil {
		b.beats.drop(c)
		return b.wrap(opCtx, "heartbeat of worker "+w.Name, err)
	}
	if sweep != nil {
		if _, err := b.endCutStarts(ctx, sweep[len(sweep)-1]); err != nil {
			b.log.Warn("flows: could not end the tasks of cut starts", "err", err)
		}
	}
	return nil
}

// beatLine is the connection a Backend's heartbeats go on: one of the
// client's dedicated connections (rueidis.Client.Dedicate), taken at the
// first heartbeat and kept until one fails or the Backend is closed, so
// that a heartbeat never waits behind the other commands of the process.
// A heartbeat that fails closes it (it may be broken, or bound to a slot
// that moved), and the next takes a fresh one. It costs the process one
// connection to Redis more, and a heartbeat no command more.
type beatLine struct {
	mu sync.Mutex
	c  rueidis.DedicatedClient // nil until the first heartbeat, and after a drop
	// closed is set by close: the heartbeats that come later go on the
	// client's shared connection, and none is taken.
	closed bool
}

// get returns the connection to send a heartbeat on, taking one from
// b's client if there is none.
func (l *beatLine) get(b *Backend) rueidis.CommandClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return b.client
	}
	if l.c == nil {
		c, _ := b.client.Dedicate() // its Close gives it back
		l.c = c
		if b.cluster {
			l.c = patientDedicated{c}
		}
	}
	return l.c
}

// drop closes c, a connection get returned, if it is still the line's.
func (l *beatLine) drop(c rueidis.CommandClient) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil && c == rueidis.CommandClient(l.c) {
		l.c.Close()
		l.c = nil
	}
}

// close closes the connection, if any; the line takes no other.
func (l *beatLine) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
}

// Workers implements queue.WorkerRegistry in one round trip, two when it
// forgets workers.
func (b *Backend) Workers(ctx context.Context) ([]queue.WorkerInfo, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	res := c.DoMulti(ctx,
		c.B().Zrange().Key(b.qkeys.seen).Min("0").Max("-1").Withscores().Build(),
		c.B().Hgetall().Key(b.qkeys.workers).Build())
	seen, err := res[0].AsZScores()
	if err != nil {
		return nil, b.wrap(ctx, "list workers", err)
	}
	infos, err := res[1].AsStrMap()
	if err != nil {
		return nil, b.wrap(ctx, "list workers", err)
	}
	forget := time.Now().Add(-queue.ForgetWorkerAfter)
	var gone []string
	list := make([]queue.WorkerInfo, 0, len(seen))
	for _, z := range seen {
		last := time.UnixMilli(int64(z.Score)).UTC()
		raw, ok := infos[z.Member]
		delete(infos, z.Member)
		var w queue.WorkerInfo
		if !ok || last.Before(forget) || json.Unmarshal([]byte(raw), &w) != nil {
			gone = append(gone, z.Member)
			continue
		}
		w.Name, w.LastSeen = z.Member, last
		list = append(list, w)
	}
	for name := range infos {
		gone = append(gone, name) // a record without a heartbeat
	}
	if len(gone) > 0 {
		res := c.DoMulti(ctx,
			c.B().Zrem().Key(b.qkeys.seen).Member(gone...).Build(),
			c.B().Hdel().Key(b.qkeys.workers).Field(gone...).Build())
		for _, r := range res {
			if err := r.Error(); err != nil {
				b.log.Warn("flows: could not forget dead workers", "err", err)
			}
		}
	}
	slices.SortFunc(list, func(a, b queue.WorkerInfo) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// leaveRegistry returns the commands that take worker out of the
// registry.
func (b *Backend) leaveRegistry(worker string) rueidis.Commands {
	c := b.client
	return rueidis.Commands{
		c.B().Zrem().Key(b.qkeys.seen).Member(worker).Build(),
		c.B().Hdel().Key(b.qkeys.workers).Field(worker).Build(),
		c.B().Zrem().Key(b.qkeys.deadlines).Member(worker).Build(),
		c.B().Zrem().Key(b.qkeys.contact).Member(worker).Build(),
	}
}
