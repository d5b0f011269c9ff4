package redisbackend

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

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
	return b.admit(ctx, keys, args)
}

// admitNew puts t, a task of a limited flow, in its flow's gate, unless
// it is there already, and lets what can start of the flow start, in one
// script. Enqueue, CreateAndEnqueue and Requeue call it once the task is
// recorded.
func (b *Backend) admitNew(ctx context.Context, t *queue.Task) error {
	keys := []string{b.streamKey(), b.holdersKey()}
	args := []string{group, strconv.Itoa(admitBatch)}
	keys, args = b.admitArgs(keys, args, t.Flow, t.Limit, []*queue.Task{t})
	_, err := b.admit(ctx, keys, args)
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
func (b *Backend) admit(ctx context.Context, keys, args []string) (time.Duration, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	res, err := admitScript.exec(ctx, b.client, keys, args).ToArray()
	if err != nil {
		return 0, b.wrap(ctx, "admit waiting tasks", err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("redisbackend: admit waiting tasks: unexpected reply of %d values", len(res))
	}
	wait := maxBlock
	if ms, err := res[1].AsInt64(); err == nil && ms >= 0 {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	}
	return wait, nil
}
