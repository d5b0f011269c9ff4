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
//	P:{q:Q}:limit:starts:F  zset  the stream entries that took a slot
//	                              within the rate's period (flows with a
//	                              rate only)
//
// A task of a limited flow never goes to the stream or the delayed set
// directly: Enqueue, CreateAndEnqueue, Retry and Requeue put it in its
// flow's gate, and only the admit script (lua/admit.lua) moves it to the
// stream, when it takes a slot. Tasks of other flows take the paths they
// took before, with not one command more.
func (b *Backend) gateKey(flow string) string   { return b.qkeys.limit + ":gate:" + flow }
func (b *Backend) slotsKey(flow string) string  { return b.qkeys.limit + ":slots:" + flow }
func (b *Backend) startsKey(flow string) string { return b.qkeys.limit + ":starts:" + flow }

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
	keys := []string{b.streamKey(), b.holdersKey()}
	args := []string{group, strconv.Itoa(admitBatch)}
	for _, name := range names {
		keys, args = b.admitArgs(keys, args, name, limits[name], nil)
	}
	return b.admit(ctx, keys, args, false)
}

// admitNew puts t, a task of a limited flow, in its flow's gate, unless
// it is there already, and lets what can start of the flow start, in one
// script. Enqueue, CreateAndEnqueue and Requeue call it once the task is
// recorded.
func (b *Backend) admitNew(ctx context.Context, t *queue.Task) error {
	keys := []string{b.streamKey(), b.holdersKey()}
	args := []string{group, strconv.Itoa(admitBatch)}
	keys, args = b.admitArgs(keys, args, t.Flow, t.Limit, []*queue.Task{t})
	_, err := b.admit(ctx, keys, args, b.durable())
	return err
}

// admitArgs appends the KEYS and ARGV of one flow to those of an admit
// script, with the tasks to add to its gate.
func (b *Backend) admitArgs(keys, args []string, flow string, l queue.Limit, add []*queue.Task) ([]string, []string) {
	keys = append(keys, b.gateKey(flow), b.slotsKey(flow), b.startsKey(flow))
	args = append(args, strconv.Itoa(l.Concurrency), strconv.Itoa(l.Rate), strconv.FormatInt(max(l.Per.Milliseconds(), 1), 10),
		strconv.Itoa(len(add)))
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
// With wait (durable mode, for a task being accepted), WAIT follows the
// script in the same round trip, and the replicas must confirm it.
func (b *Backend) admit(ctx context.Context, keys, args []string, wait bool) (time.Duration, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	var reply rueidis.RedisResult
	if wait {
		res := c.DoMulti(ctx, admitScript.evalsha(c, keys, args), b.waitCommand())
		if noScript(res[0].Error()) {
			res = c.DoMulti(ctx, admitScript.eval(c, keys, args), b.waitCommand())
		}
		if err := res[0].Error(); err == nil {
			if err := b.replicated(res[1]); err != nil {
				return 0, b.wrap(ctx, "admit waiting tasks", err)
			}
		}
		reply = res[0]
	} else {
		reply = admitScript.exec(ctx, c, keys, args)
	}
	res, err := reply.ToArray()
	if err != nil {
		return 0, b.wrap(ctx, "admit waiting tasks", err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("redisbackend: admit waiting tasks: unexpected reply of %d values", len(res))
	}
	next := maxBlock
	if ms, err := res[1].AsInt64(); err == nil && ms >= 0 {
		next = min(next, time.Duration(ms)*time.Millisecond)
	}
	return next, nil
}
