package redisbackend

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// The keys of a limited flow F (a task with a queue.Limit), under the
// queue's hash tag:
//
//	P:{q:Q}:limit:gate:F    zset  the flow's tasks waiting for a slot,
//	                              scored by their due time (Unix ms)
//	P:{q:Q}:limit:slots:F   zset  the stream entries holding a slot, scored
//	                              by when they took it
//	P:{q:Q}:limit:starts:F  zset  the starts of the rate's window (flows
//	                              with a rate only): the stream entries
//	                              let through, scored by the time a fetch
//	                              first leased them, until then above
//	                              any time: 2^52 plus the time (ms) of
//	                              the entry's id (such an entry carries
//	                              the field "rate", the flow's name, see
//	                              lua/admit.lua and lua/fetch.lua);
//	                              it expires the rate's period after
//	                              its last start, or while it holds
//	                              starts not started, twice the
//	                              retention (or the period, if longer)
//	                              after the last admit with the rate
//	P:{q:Q}:limit:flows     set   the names of the flows whose tasks have
//	                              waited in a gate (see Depth)
//
// A task of a limited flow never goes to the stream or the delayed set
// directly: Enqueue, CreateAndEnqueue, Retry and Requeue put it in its
// flow's gate, and only the admit script (lua/admit.lua) moves it to the
// stream, when it takes a slot. Tasks of other flows take the paths they
// took before, with not one command more. The exceptions are a task
// given back for its finish hooks (queue.EndHooksPending): it has ended,
// its next lease runs the hooks, not its flow; and a task given back
// whose lease tells it was cancelled: its worker ends it without running
// it. Retry queues them as tasks of a flow without limits: they take no
// slot and are no start of the rate (Cancel moves a cancelled task out
// of its gate too).
func (b *Backend) gateKey(flow string) string   { return b.qkeys.limit + ":gate:" + flow }
func (b *Backend) slotsKey(flow string) string  { return b.qkeys.limit + ":slots:" + flow }
func (b *Backend) startsKey(flow string) string { return b.qkeys.limit + ":starts:" + flow }
func (b *Backend) limitedKey() string           { return b.qkeys.limit + ":flows" }

// admitBatch bounds the tasks of one flow that one admit script moves.
const admitBatch = 100

// Admit gives the free slots of the flows named in limits to their
// waiting tasks, oldest due first, as far as their rates allow, in one
// script (lua/admit.lua); a queue.Worker whose registry has limited flows
// calls it whenever one of its tasks of such a flow is settled, when the
// previous call said something changes, and at least once a second. It
// returns how long nothing changes unless a slot is freed (at most a
// second; a second when nothing waits).
func (b *Backend) Admit(ctx context.Context, limits map[string]queue.Limit) (time.Duration, error) {
	names := slices.Sorted(maps.Keys(limits))
	keys, args := b.admitHead()
	for _, name := range names {
		keys, args = b.admitArgs(keys, args, name, limits[name], nil)
	}
	return b.admit(ctx, keys, args, false)
}

// admitNew puts t, a task of a limited flow, in its flow's gate, unless
// it is there already, marks its start done if it is in the starting set
// (see starts.go), and lets what can start of the flow start, in one
// script. Enqueue, CreateAndEnqueue and Requeue call it once the task is
// recorded. The commands before go ahead of the script in its round
// trip; their errors are logged.
func (b *Backend) admitNew(ctx context.Context, t *queue.Task, before ...rueidis.Completed) error {
	keys, args := b.admitHead()
	keys, args = b.admitArgs(keys, args, t.Flow, t.Limit, []*queue.Task{t})
	// The flow's name, for Depth: harmless if the script has not run.
	named := b.client.B().Sadd().Key(b.limitedKey()).Member(t.Flow).Build()
	_, err := b.admit(ctx, keys, args, b.durable(), append(before, named)...)
	return err
}

// admitHead returns the KEYS and ARGV of an admit script that come
// before those of its flows.
func (b *Backend) admitHead() (keys, args []string) {
	return []string{b.streamKey(), b.startingKey(), b.delayedKey(), b.wakeKey()},
		[]string{group, strconv.Itoa(admitBatch), strconv.FormatInt(doneScore, 10), strconv.FormatInt(2*b.retentionMS(), 10)}
}

// admitArgs appends the KEYS and ARGV of one flow to those of an admit
// script, with the tasks to add to its gate.
func (b *Backend) admitArgs(keys, args []string, flow string, l queue.Limit, add []*queue.Task) ([]string, []string) {
	keys = append(keys, b.gateKey(flow), b.slotsKey(flow), b.startsKey(flow))
	args = append(args, strconv.Itoa(l.Concurrency), strconv.Itoa(l.Rate), strconv.FormatInt(max(l.Per.Milliseconds(), 1), 10),
		flow, strconv.Itoa(len(add)))
	for _, t := range add {
		due := t.RunAt.UnixMilli()
		if t.RunAt.IsZero() {
			due = 0
		}
		args = append(args, t.ID, strconv.FormatInt(due, 10))
	}
	return keys, args
}

// admit runs the admit script and returns its wait, bounded by maxBlock.
// The commands before go ahead of it in the same round trip; their
// errors are logged. With wait (durable mode, for a task being accepted),
// WAIT follows the script, and the replicas must confirm it.
func (b *Backend) admit(ctx context.Context, keys, args []string, wait bool, before ...rueidis.Completed) (time.Duration, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	cmds := append(append(make(rueidis.Commands, 0, len(before)+2), before...), admitScript.evalsha(c, keys, args))
	if wait {
		cmds = append(cmds, b.waitCommand())
	}
	res := c.DoMulti(ctx, cmds...)
	for _, r := range res[:len(before)] {
		if err := r.Error(); err != nil {
			b.log.Warn("flows: a command sent with the admit script failed", "err", err)
		}
	}
	res = res[len(before):]
	if noScript(res[0].Error()) {
		if wait {
			again := c.DoMulti(ctx, admitScript.eval(c, keys, args), b.waitCommand())
			res[0], res[len(res)-1] = again[0], again[1]
		} else {
			res[0] = c.Do(ctx, admitScript.eval(c, keys, args))
		}
	}
	reply := res[0]
	if wait && reply.Error() == nil {
		if err := b.replicated(res[len(res)-1]); err != nil {
			return 0, b.wrap(ctx, "admit waiting tasks", err)
		}
	}
	out, err := reply.ToArray()
	if err != nil {
		return 0, b.wrap(ctx, "admit waiting tasks", err)
	}
	if len(out) != 2 {
		return 0, fmt.Errorf("redisbackend: admit waiting tasks: unexpected reply of %d values", len(out))
	}
	next := maxBlock
	if ms, err := out[1].AsInt64(); err == nil && ms >= 0 {
		next = min(next, time.Duration(ms)*time.Millisecond)
	}
	return next, nil
}
