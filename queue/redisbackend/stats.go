package redisbackend

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// TaskStats implements queue.TaskLister in two round trips, whose cost
// depends on the number of flows, not of tasks: the counts by state come
// from the task index (ZCOUNT of each rank's range, for the queue and for
// each flow of the flows set), the oldest waiting task from the first
// entry of the stream after the last one delivered to a worker (a task
// cancelled while it waits, until a worker drops it: see Depth), and the
// last minute from the SUCCESS and
// FAILURE ranges: their members that ended within it are counted, and the
// hashes of the latest queue.LatencySample of them are read for their
// times. It also prunes the index of the tasks that ended more than a
// retention ago, when due (see index.go).
func (b *Backend) TaskStats(ctx context.Context) (queue.Stats, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	now := time.Now()
	st := queue.Stats{At: now.UTC(), Flows: []queue.FlowCounts{}}
	st.LastMinute.Window = queue.StatsWindow
	from := now.Add(-queue.StatsWindow).UnixMilli()
	succ, fail := stateRanks[progress.StateSuccess], stateRanks[progress.StateFailure]
	window := func(rank int64) (string, string) {
		return formatScore(indexScore(rank, from)), formatScore(indexScore(rank, timeMask))
	}
	cmds := rueidis.Commands{
		c.B().Smembers().Key(b.flowsKey()).Build(),
		c.B().Zcard().Key(b.deadKey()).Build(),
		c.B().XinfoGroups().Key(b.streamKey()).Build(),
	}
	for _, rank := range []int64{succ, fail} {
		lo, hi := window(rank)
		cmds = append(cmds,
			c.B().Zcount().Key(b.indexKey()).Min(lo).Max(hi).Build(),
			c.B().Zrange().Key(b.indexKey()).Min(hi).Max(lo).Byscore().Rev().Limit(0, queue.LatencySample).Withscores().Build())
	}
	cmds = append(cmds, b.countCommands(b.indexKey())...)
	res := c.DoMulti(ctx, cmds...)
	flows, err := res[0].AsStrSlice()
	if err != nil {
		return queue.Stats{}, b.wrap(ctx, "read stats", err)
	}
	slices.Sort(flows)
	if st.Dead, err = res[1].AsInt64(); err != nil {
		return queue.Stats{}, b.wrap(ctx, "read stats", err)
	}
	lastDelivered, err := lastDeliveredID(res[2])
	if err != nil {
		return queue.Stats{}, b.wrap(ctx, "read stats", err)
	}
	var sample []indexed
	for i, rank := range []int64{succ, fail} {
		n, err := res[3+2*i].AsInt64()
		if err != nil {
			return queue.Stats{}, b.wrap(ctx, "read stats", err)
		}
		if rank == succ {
			st.LastMinute.Succeeded = n
		} else {
			st.LastMinute.Failed = n
		}
		zs, err := res[4+2*i].AsZScores()
		if err != nil {
			return queue.Stats{}, b.wrap(ctx, "read stats", err)
		}
		for _, z := range zs {
			r, ms := splitScore(z.Score)
			sample = append(sample, indexed{id: z.Member, rank: r, ms: ms})
		}
	}
	if st.Counts, err = b.readCounts(ctx, res[7:11]); err != nil {
		return queue.Stats{}, err
	}

	// Second round trip: the counts of each flow, the oldest waiting
	// entry, the times of the sample, and pruning when due.
	cmds = cmds[:0]
	for _, flow := range flows {
		cmds = append(cmds, b.countCommands(b.flowIndexKey(flow))...)
	}
	oldest := "-"
	if lastDelivered != "" {
		oldest = "(" + lastDelivered
	}
	cmds = append(cmds, c.B().Xrange().Key(b.streamKey()).Start(oldest).End("+").Count(1).Build())
	slices.SortFunc(sample, compareIndexed)
	sample = sample[:min(len(sample), queue.LatencySample)]
	for _, m := range sample {
		cmds = append(cmds, c.B().Hmget().Key(b.taskKey(m.id)).Field(summaryFields[:]...).Build())
	}
	keys := []string{b.indexKey()}
	for _, flow := range flows {
		keys = append(keys, b.flowIndexKey(flow))
	}
	b.index.mu.Lock()
	cmds = append(cmds, b.pruneLocked(keys, now)...)
	b.index.mu.Unlock()
	res = c.DoMulti(ctx, cmds...)
	for _, r := range res {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return queue.Stats{}, b.wrap(ctx, "read stats", err)
		}
	}
	for i, flow := range flows {
		counts, err := b.readCounts(ctx, res[4*i:4*i+4])
		if err != nil {
			return queue.Stats{}, err
		}
		if counts.Total() > 0 {
			st.Flows = append(st.Flows, queue.FlowCounts{Flow: flow, Counts: counts})
		}
	}
	res = res[4*len(flows):]
	if entries, _ := res[0].AsXRange(); len(entries) > 0 {
		if ms, err := parseEventID(entries[0].ID); err == nil {
			st.OldestReady = time.UnixMilli(int64(ms.n)).UTC()
		}
	}
	res = res[1:]
	ended := make([]queue.TaskSummary, 0, len(sample))
	for i := range sample {
		m, err := res[i].ToMessage()
		if err != nil {
			continue
		}
		var v [len(summaryFields)]string
		if hmgetValues(m, v[:]) != nil {
			continue
		}
		if s, ok := summaryOf(sample[i].id, v); ok {
			ended = append(ended, *s)
		}
	}
	st.LastMinute.Measure(ended)
	return st, nil
}

// countCommands returns the four ZCOUNTs of the ranks of an index key.
func (b *Backend) countCommands(key string) rueidis.Commands {
	cmds := make(rueidis.Commands, len(rankStates))
	for rank := range rankStates {
		r := int64(rank)
		cmds[rank] = b.client.B().Zcount().Key(key).
			Min(formatScore(indexScore(r, 0))).Max(formatScore(indexScore(r, timeMask))).Build()
	}
	return cmds
}

// readCounts reads the replies of countCommands.
func (b *Backend) readCounts(ctx context.Context, res []rueidis.RedisResult) (queue.StateCounts, error) {
	var n [4]int64
	for i := range n {
		var err error
		if n[i], err = res[i].AsInt64(); err != nil {
			return queue.StateCounts{}, b.wrap(ctx, "count tasks", err)
		}
	}
	return queue.StateCounts{Pending: n[0], Progress: n[1], Success: n[2], Failure: n[3]}, nil
}

// lastDeliveredID reads the id of the last entry delivered to the
// workers' group from an XINFO GROUPS reply: "" when the group or the
// stream does not exist yet.
func lastDeliveredID(reply rueidis.RedisResult) (string, error) {
	groups, err := reply.ToArray()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return "", nil
		}
		return "", err
	}
	for _, g := range groups {
		info, err := g.AsMap()
		if err != nil {
			return "", err
		}
		name, last := info["name"], info["last-delivered-id"]
		if s, _ := name.ToString(); s == group {
			return last.ToString()
		}
	}
	return "", nil
}
