package redisbackend

import (
	"context"
	"strings"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

var _ queue.DepthReader = (*Backend)(nil)

// Depth implements queue.DepthReader in one round trip of six commands,
// none of which scans: the consumer group's lag (the stream entries not
// yet delivered to a worker) is Ready, the size of the delayed set less
// the size of the hooks set (its tasks that have ended and wait to run
// their finish hooks again, see lua/retry.lua) is Delayed, the size of
// the hooks set is HooksWaiting, and the size of the leases set (with
// that of the layout before 2026-12-07, see lua/lib/legacy.lua) is
// Running. The tasks of limited
// flows waiting in their gates (see limit.go) count as Delayed: when a
// flow has ever had one, a second round trip reads the size of each
// gate. When Redis cannot
// tell the lag (it may not after entries were deleted from the stream by
// hand) or before the first Fetch, Ready is the stream's length less the
// entries being run, which may count up to a block of acknowledged
// entries (see lua/lib/release.lua).
//
// A task cancelled while it waits in the stream (Cancel also moves a
// delayed task there) counts in Ready until a worker takes it and drops
// it, unlike on the Memory backend (see queue.Stats.Ready). Leaving it out
// would need its entry's id, which nothing records: the lag counts
// entries, and the task hash does not name its entry. Recording the
// entry on every enqueue, or looking for it on Cancel, would cost every
// task commands, or a scan of the stream.
func (b *Backend) Depth(ctx context.Context) (queue.Depth, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	res := c.DoMulti(ctx,
		c.B().XinfoGroups().Key(b.streamKey()).Build(),
		c.B().Xlen().Key(b.streamKey()).Build(),
		c.B().Zcard().Key(b.delayedKey()).Build(),
		c.B().Zcard().Key(b.leasesKey()).Build(),
		c.B().Smembers().Key(b.limitedKey()).Build(),
		c.B().Zcard().Key(b.hooksKey()).Build(),
		c.B().Zcard().Key(b.qkeys.oldLeases).Build(),
	)
	var d queue.Depth
	var err error
	if d.Delayed, err = res[2].AsInt64(); err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	if d.HooksWaiting, err = res[5].AsInt64(); err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	// The hooks set is a part of the delayed set, both written by the
	// same scripts: the bound only guards against keys changed by hand.
	d.HooksWaiting = min(d.HooksWaiting, d.Delayed)
	d.Delayed -= d.HooksWaiting
	limited, err := res[4].AsStrSlice()
	if err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	if len(limited) > 0 {
		cmds := make(rueidis.Commands, len(limited))
		for i, flow := range limited {
			cmds[i] = c.B().Zcard().Key(b.gateKey(flow)).Build()
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			n, err := r.AsInt64()
			if err != nil {
				return d, b.wrap(ctx, "queue depth", err)
			}
			d.Delayed += n
		}
	}
	if d.Running, err = res[3].AsInt64(); err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	// Leases taken by a version before the one lease structure, during a
	// rolling deploy (see lua/lib/legacy.lua).
	old, err := res[6].AsInt64()
	if err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	d.Running += old
	length, err := res[1].AsInt64()
	if err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	lag, known, err := groupLag(res[0])
	if err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	if known {
		d.Ready = lag
	} else {
		d.Ready = max(length-d.Running, 0)
	}
	return d, nil
}

// groupLag reads the lag of the workers' group from an XINFO GROUPS
// reply; known is false when Redis could not tell it, or the group does
// not exist yet (the first Fetch makes it): then no entry of the stream
// was delivered. A stream that does not exist has no lag: 0, known.
func groupLag(reply rueidis.RedisResult) (lag int64, known bool, err error) {
	groups, err := reply.ToArray()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return 0, true, nil
		}
		return 0, false, err
	}
	for _, g := range groups {
		info, err := g.AsMap()
		if err != nil {
			return 0, false, err
		}
		name := info["name"]
		if s, _ := name.ToString(); s != group {
			continue
		}
		v, ok := info["lag"]
		if !ok || v.IsNil() {
			return 0, false, nil
		}
		lag, err := v.AsInt64()
		return lag, err == nil, err
	}
	return 0, false, nil
}
