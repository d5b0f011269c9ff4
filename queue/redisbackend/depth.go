package redisbackend

import (
	"context"
	"strings"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

var _ queue.DepthReader = (*Backend)(nil)

// Depth implements queue.DepthReader in one round trip of three commands,
// none of which scans: the consumer group's lag (the stream entries not
// yet delivered to a worker) is Ready, the size of the delayed set is
// Delayed and the size of the leases set is Running. When Redis cannot
// tell the lag (it may not after entries were deleted from the stream by
// hand) or before the first Fetch, Ready is the stream's length less the
// entries being run, which may count up to a block of acknowledged
// entries (see lua/lib/release.lua).
func (b *Backend) Depth(ctx context.Context) (queue.Depth, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	res := c.DoMulti(ctx,
		c.B().XinfoGroups().Key(b.streamKey()).Build(),
		c.B().Xlen().Key(b.streamKey()).Build(),
		c.B().Zcard().Key(b.delayedKey()).Build(),
		c.B().Zcard().Key(b.leasesKey()).Build(),
	)
	var d queue.Depth
	var err error
	if d.Delayed, err = res[2].AsInt64(); err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
	if d.Running, err = res[3].AsInt64(); err != nil {
		return d, b.wrap(ctx, "queue depth", err)
	}
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
