package redisbackend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

var _ queue.TaskLister = (*Backend)(nil)

// indexed is a member of the task index: a task id and the rank and
// time of its score.
type indexed struct {
	id       string
	rank, ms int64
}

// compareIndexed orders members as a listing does: newest first, then by
// id, greatest first.
func compareIndexed(a, b indexed) int {
	if c := cmp.Compare(b.ms, a.ms); c != 0 {
		return c
	}
	return strings.Compare(b.id, a.id)
}

// summaryFields are the fields of a task's hash a listing reads.
var summaryFields = [...]string{recRec, recAttempt, recCancelled, fieldState, fieldStatus, fieldProgress, fieldStarted, fieldEnded,
	recHandBacks, recHookRetries, recPrev, recPrevOf, recNoRuns}

// ownerScan is how many index members a page filtered by owner reads,
// per task of its limit: the index has no owner, so such a page reads
// ownerScan*Limit members, newest first, and keeps those of the owner.
const ownerScan = 4

// ListTasks implements queue.TaskLister from the task index (see
// index.go): the index of o.Flow, or the queue's for all flows. Each rank
// that o.State selects (all four when it is "") gives the page's worth of
// members after the cursor and within o's time range (a range of scores),
// newest first, in one ZRANGE BYSCORE REV LIMIT each, and the newest of
// them all make the page; then the page's task hashes are read (one HMGET
// of summaryFields each). That is two round trips, and a number of
// commands and a cost that depend on the page's size, not on the number
// of tasks the index holds. A member found wrong against its hash (its task gone, or in
// another state) is repaired and the page read again, at most twice. A
// Redis that refuses the repair's writes without running them (out of
// memory, replicas missing, a disk it cannot persist to: see
// refusedUnrun) gets the page as read, without the members found wrong.
//
// The index has no owner: with o.Owner set, a page reads ownerScan times
// o.Limit members and keeps the tasks of the owner, so that it may hold
// fewer than o.Limit tasks, or none, with a Next that goes on after the
// last member read.
func (b *Backend) ListTasks(ctx context.Context, o queue.ListOptions) (queue.TaskPage, error) {
	var after *queue.Cursor
	if o.Cursor != "" {
		c, err := queue.ParseCursor(o.Cursor)
		if err != nil {
			return queue.TaskPage{}, err
		}
		after = &c
	}
	ranks := []int64{0, 1, 2, 3}
	if o.State != "" {
		r, ok := stateRanks[o.State]
		if !ok {
			return queue.TaskPage{}, fmt.Errorf("%w: unknown state %q", queue.ErrInvalidQuery, o.State)
		}
		ranks = []int64{r}
	}
	if o.Limit < 1 || o.Limit > queue.MaxListLimit {
		return queue.TaskPage{}, fmt.Errorf("%w: limit %d out of range 1-%d", queue.ErrInvalidQuery, o.Limit, queue.MaxListLimit)
	}
	span, ok := spanOf(o.Since, o.Until)
	if !ok {
		return queue.TaskPage{Tasks: []queue.TaskSummary{}}, nil
	}
	key := b.indexKey()
	if o.Flow != "" {
		key = b.flowIndexKey(o.Flow)
	}
	scan := o.Limit
	if o.Owner != "" {
		scan = ownerScan * o.Limit
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	for try := 0; ; try++ {
		members, err := b.members(ctx, key, ranks, span, after, scan+1)
		if err != nil {
			return queue.TaskPage{}, err
		}
		more := len(members) > scan
		members = members[:min(len(members), scan)]
		tasks, wrong, err := b.summaries(ctx, members)
		if err != nil {
			return queue.TaskPage{}, err
		}
		if len(wrong) > 0 {
			err := b.repair(ctx, key, o.Flow, wrong)
			if errors.Is(err, progress.ErrNotSent) {
				// Redis answers reads and refuses writes (out of memory,
				// replicas missing, disk failing): the page leaves out
				// the tasks it could not move, until a listing can.
				b.log.Warn("flows: could not repair the task index; the listing leaves out the tasks it could not move", "err", err)
				return pageOf(o, members, tasks, more), nil
			}
			if err != nil {
				return queue.TaskPage{}, err
			}
			if try < 2 {
				continue
			}
		}
		return pageOf(o, members, tasks, more), nil
	}
}

// pageOf makes the page of o from the members read and their summaries
// (nil for a member found wrong), more telling whether the index holds
// more members after them: the tasks that o selects, up to o.Limit, and
// a Next after the last member kept (the page is full) or read.
func pageOf(o queue.ListOptions, members []indexed, tasks []*queue.TaskSummary, more bool) queue.TaskPage {
	page := queue.TaskPage{Tasks: make([]queue.TaskSummary, 0, min(len(tasks), o.Limit))}
	next := func(m indexed) string { return queue.Cursor{At: time.UnixMilli(m.ms), ID: m.id}.String() }
	for i, s := range tasks {
		if s == nil || !o.Match(s) {
			continue
		}
		page.Tasks = append(page.Tasks, *s)
		if len(page.Tasks) == o.Limit {
			if more || i < len(members)-1 {
				page.Next = next(members[i])
			}
			return page
		}
	}
	if more && len(members) > 0 {
		page.Next = next(members[len(members)-1])
	}
	return page
}

// span is a listing's time range as Unix ms, both ends inclusive.
type span struct{ from, to int64 }

// spanOf is the span of the range [since, until), each zero time open;
// ok is false when the range is empty.
func spanOf(since, until time.Time) (s span, ok bool) {
	s = span{from: 0, to: timeMask}
	if !since.IsZero() {
		s.from = max(since.UnixMilli(), 0)
	}
	if !until.IsZero() {
		s.to = min(until.UnixMilli()-1, timeMask)
	}
	return s, s.from <= s.to
}

// members returns up to n members of the ranks of key within span after
// the cursor (all when nil), newest first. One ZRANGE per rank, in one
// round trip; each reads from the cursor's millisecond on, which holds
// the cursor's own task (so it asks for one more) and any that entered
// their state in the same millisecond: when more of those are at or
// before the cursor than the one, that rank is read on, page after page.
func (b *Backend) members(ctx context.Context, key string, ranks []int64, sp span, after *queue.Cursor, n int) ([]indexed, error) {
	c := b.client
	to, ask := sp.to, n
	if after != nil {
		to, ask = min(after.At.UnixMilli(), sp.to), n+1
	}
	if to < sp.from {
		return nil, nil // the cursor is past the range
	}
	zrange := func(rank int64, offset int) rueidis.Completed {
		return c.B().Zrange().Key(key).Min(formatScore(indexScore(rank, to))).Max(formatScore(indexScore(rank, sp.from))).
			Byscore().Rev().Limit(int64(offset), int64(ask)).Withscores().Build()
	}
	cmds := make(rueidis.Commands, len(ranks))
	for i, rank := range ranks {
		cmds[i] = zrange(rank, 0)
	}
	var all []indexed
	for i, r := range c.DoMulti(ctx, cmds...) {
		offset, kept := 0, 0
		for {
			got, err := r.AsZScores()
			if err != nil {
				return nil, b.wrap(ctx, "list tasks", err)
			}
			for _, z := range got {
				rank, ms := splitScore(z.Score)
				m := indexed{id: z.Member, rank: rank, ms: ms}
				if after != nil && (ms > after.At.UnixMilli() || ms == after.At.UnixMilli() && m.id >= after.ID) {
					continue // at or before the cursor
				}
				all = append(all, m)
				kept++
			}
			if kept >= n || len(got) < ask {
				break
			}
			// Members at or before the cursor took the room: read on.
			offset += len(got)
			r = c.Do(ctx, zrange(ranks[i], offset))
		}
	}
	slices.SortFunc(all, compareIndexed)
	return all[:min(len(all), n)], nil
}

// summaries reads the hashes of the tasks of members, in one round trip,
// and returns their summaries in the same order; a member whose hash is
// gone or whose rank is not its task's state is in wrong too, with a nil
// summary for a task that is gone.
func (b *Backend) summaries(ctx context.Context, members []indexed) ([]*queue.TaskSummary, []wrongMember, error) {
	if len(members) == 0 {
		return nil, nil, nil
	}
	c := b.client
	cmds := make(rueidis.Commands, len(members))
	for i, m := range members {
		id := m.id
		if !queue.ValidID(id) {
			id = "-" // a member no task can have: its hash is missing
		}
		cmds[i] = c.B().Hmget().Key(b.taskKey(id)).Field(summaryFields[:]...).Build()
	}
	out := make([]*queue.TaskSummary, len(members))
	var wrong []wrongMember
	for i, r := range c.DoMulti(ctx, cmds...) {
		m, err := r.ToMessage()
		if err != nil {
			return nil, nil, b.wrap(ctx, "list tasks", err)
		}
		var v [len(summaryFields)]string
		if err := hmgetValues(m, v[:]); err != nil {
			return nil, nil, fmt.Errorf("redisbackend: list tasks: %w", err)
		}
		s, ok := summaryOf(members[i].id, v)
		if !ok {
			wrong = append(wrong, wrongMember{indexed: members[i]})
			continue
		}
		out[i] = s
		if stateRanks[s.State] != members[i].rank {
			wrong = append(wrong, wrongMember{indexed: members[i], task: s})
		}
	}
	return out, wrong, nil
}

// summaryOf makes the summary of task id from the values of
// summaryFields; ok is false when the task has no progress record or no
// queue record (it is gone, or was never queued). Its Attempt is the
// task's Attempts, as Get reads it (see decodeRecord).
func summaryOf(id string, v [len(summaryFields)]string) (*queue.TaskSummary, bool) {
	state := progress.State(v[3])
	if !state.Valid() {
		return nil, false
	}
	t, ok, err := decodeRecord(id, record{iRec: v[0], iAttempt: v[1], iCancelled: v[2], iState: v[3], iHandBacks: v[8], iHookRetries: v[9], iPrev: v[10], iPrevOf: v[11], iNoRuns: v[12]})
	if err != nil || !ok {
		return nil, false
	}
	s := &queue.TaskSummary{
		ID: id, Flow: t.Flow, State: state, Status: v[4], Attempt: t.Attempts(), MaxAttempts: t.MaxAttempts,
		HandBacks: t.HandBacks, RequeuedFrom: t.RequeuedFrom, Resume: t.Resume, Cancelled: t.Cancelled, EnqueuedAt: t.EnqueuedAt, Owner: t.Owner,
		StartedAt: msTime(v[6]), EndedAt: msTime(v[7]),
	}
	s.Progress, _ = strconv.Atoi(v[5])
	return s, true
}

// wrongMember is a member of the index that its task's hash contradicts:
// task is nil when the task is gone, else its summary.
type wrongMember struct {
	indexed
	task *queue.TaskSummary
}

// repair makes the index agree with the tasks of wrong, read from key
// (the index of flow, or the queue's when flow is ""), in one round trip
// (two when a task whose flow is unknown is gone): a task that is gone
// leaves key, the queue's index and its flow's (every flow's, when its
// flow is unknown: its hash is gone with it); one in another
// state moves to it, in the queue's index and its flow's, with the time
// its hash gives. A move to a SUCCESS or FAILURE overwrites the score
// whatever it was, since an ended task changes no more; any other moves
// up only (ZADD GT), so that a state change landing meanwhile stands.
func (b *Backend) repair(ctx context.Context, key, flow string, wrong []wrongMember) error {
	c := b.client
	var cmds rueidis.Commands
	var flows []string // every flow's, for a task gone whose flow is unknown
	for _, w := range wrong {
		if w.task == nil {
			cmds = append(cmds, c.B().Zrem().Key(key).Member(w.id).Build())
			if flow != "" {
				cmds = append(cmds, c.B().Zrem().Key(b.indexKey()).Member(w.id).Build())
				continue
			}
			if flows == nil {
				var err error
				if flows, err = c.Do(ctx, c.B().Smembers().Key(b.flowsKey()).Build()).AsStrSlice(); err != nil {
					return b.wrap(ctx, "repair the task index", err)
				}
			}
			for _, f := range flows {
				cmds = append(cmds, c.B().Zrem().Key(b.flowIndexKey(f)).Member(w.id).Build())
			}
			continue
		}
		s := w.task
		score := indexScore(stateRanks[s.State], s.ChangedAt().UnixMilli())
		for _, k := range []string{b.indexKey(), b.flowIndexKey(s.Flow)} {
			if s.State.Terminal() {
				cmds = append(cmds, c.B().Zadd().Key(k).ScoreMember().ScoreMember(score, s.ID).Build())
			} else {
				cmds = append(cmds, c.B().Zadd().Key(k).Gt().ScoreMember().ScoreMember(score, s.ID).Build())
			}
		}
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return b.wrap(ctx, "repair the task index", err)
		}
	}
	return nil
}
