package redisbackend

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// The task index of a queue lists its tasks by state and flow, newest
// first, at a cost per page that does not grow with the number of tasks
// (see ListTasks). It is two kinds of sorted set under the queue's hash
// tag: P:{q:Q}:index holds every task of the queue, P:{q:Q}:index:<flow>
// the tasks of one flow, and the set P:{q:Q}:flows names the flows that
// have had tasks. A task's member is its id; its score says its state
// and when it entered it:
//
//	score = rank * 2^42 + Unix ms
//
// with rank 0 for PENDING, 1 for PROGRESS, 2 for SUCCESS and 3 for
// FAILURE. The tasks of one state are then a range of scores, ordered by
// time, and a state change is one ZADD that moves the member to its new
// range. States only move up the ranks, so every index write is a ZADD GT:
// writes that arrive late or twice (a retried round trip, a pipeline that
// overtakes another) never move a task back, and the order in which they
// land does not matter.
//
// A task is listed once it exists and before it can run, and its entry
// follows its state, wherever a process dies or a connection breaks:
//
//   - On a single Redis the scripts that change a task write its entry
//     themselves, in the same step (see lua/lib/index.lua): the create
//     and enqueue scripts for a task they record, the append and end
//     scripts for events they record that change the task's state. A
//     call a script refuses (an id taken, a caller over its limit, a
//     task ended or gone) writes nothing. A re-queue, which is not one
//     script, sends the entry after the task's record and before the
//     script that queues it, once the record's reply has come.
//   - On a Redis Cluster a task's keys and the queue's are on different
//     slots, so no script reaches both. Every start there is taken in
//     steps and marked in the queue's starting set (see starts.go); its
//     entry goes to the queue's slot once its record is written, ahead
//     of the commands that queue the task and mark its start done, in
//     their round trip. A start cut before them is one the sweep of cut
//     starts ends, and indexes as FAILURE. The events of a task write its
//     entry in the round trip of their script, behind it.
//
// Writes that come from commands rather than from a script (a Cluster's,
// and an Append that does not know the task's flow, which writes the
// queue's index only) say what was asked, not what was done. A listing
// therefore checks every task it lists against the task's hash and
// repairs what it finds wrong (see repair): a member whose task is gone is
// removed, one whose rank is not the task's state is moved to it.
//
// Ended tasks leave the index as their keys expire: the members of the
// SUCCESS and FAILURE ranges that ended more than a retention ago are
// removed (ZREMRANGEBYSCORE, see pruneCommands) by the writes and reads
// of the index, at most once per pruneEvery per key and process.

// Ranks of the states in index scores.
var stateRanks = map[progress.State]int64{
	progress.StatePending: 0, progress.StateProgress: 1, progress.StateSuccess: 2, progress.StateFailure: 3,
}

// rankStates are the states by rank.
var rankStates = [...]progress.State{progress.StatePending, progress.StateProgress, progress.StateSuccess, progress.StateFailure}

// rankBits is the width of the time part of an index score: Unix ms fit
// in it until the year 2109, and with the rank the score stays below
// 2^53, which a float64 holds exactly.
const rankBits = 42

// timeMask keeps the time part of a score.
const timeMask = 1<<rankBits - 1

// indexScore is the score of a task in state rank since Unix ms ms.
func indexScore(rank, ms int64) float64 {
	return float64(rank<<rankBits | min(max(ms, 0), timeMask))
}

// splitScore is the rank and Unix ms of a score.
func splitScore(score float64) (rank, ms int64) {
	n := int64(score)
	return n >> rankBits, n & timeMask
}

// formatScore writes a score as ZRANGE takes it.
func formatScore(score float64) string { return strconv.FormatInt(int64(score), 10) }

// indexEntry is a state change to write into the index: task id entered
// the state of rank rank at Unix ms ms; flow is its flow, "" when the
// writer does not know it (then only the queue's index is written).
type indexEntry struct {
	id, flow string
	rank, ms int64
}

// stateChange is the index entry of a call that appends events to task
// id of flow, if the events change its state: to the state of their
// terminal event, or to PROGRESS when one of them is a state event to
// PROGRESS. An event that moves a PENDING task to PROGRESS by itself (a
// status, a step) is left to a listing's repair: the worker always
// starts a run with a state event.
func stateChange(id, flow string, events []progress.Event, now time.Time) (indexEntry, bool) {
	rank := int64(-1)
	for _, e := range events {
		if e.Type == progress.EventState && (e.State == progress.StateProgress || e.State.Terminal()) {
			rank = max(rank, stateRanks[e.State])
		}
	}
	return indexEntry{id: id, flow: flow, rank: rank, ms: now.UnixMilli()}, rank >= 0
}

// Index key names.
func (b *Backend) indexKey() string { return b.qkeys.index }
func (b *Backend) flowsKey() string { return b.qkeys.flows }
func (b *Backend) flowIndexKey(flow string) string {
	return b.qkeys.index + ":" + flow
}

// indexState is what a Backend remembers of its index writes.
type indexState struct {
	mu sync.Mutex
	// named holds when this process last added each flow to the flows
	// set.
	named map[string]time.Time
	// pruned holds when this process last pruned each index key.
	pruned map[string]time.Time
}

// Index upkeep intervals, per process.
const (
	// renameEvery is how often a process adds a flow it writes tasks of
	// to the flows set, which nothing removes: once is enough, and the
	// rest guards against a set lost otherwise.
	renameEvery = time.Minute
	// pruneEvery is how often a process prunes one index key.
	pruneEvery = 10 * time.Second
	// maxRemembered bounds the flows and keys an indexState remembers;
	// past it, it forgets them all, which costs a few commands more.
	maxRemembered = 4096
)

// due reports whether key was last done, in m, more than every ago, and
// if so records now.
func due(m *map[string]time.Time, key string, now time.Time, every time.Duration) bool {
	if *m == nil || len(*m) >= maxRemembered {
		*m = map[string]time.Time{}
	}
	if last, ok := (*m)[key]; ok && now.Sub(last) < every {
		return false
	}
	(*m)[key] = now
	return true
}

// indexCommands returns the commands that write entries into the index:
// one ZADD GT into the queue's index and one into each flow's, the flows'
// names into the flows set when due, and the pruning of each key written
// when due.
func (b *Backend) indexCommands(entries []indexEntry) rueidis.Commands {
	if len(entries) == 0 {
		return nil
	}
	c := b.client
	all := c.B().Zadd().Key(b.indexKey()).Gt().ScoreMember()
	byFlow := map[string]*[]indexEntry{}
	var flows []string
	for _, e := range entries {
		all = all.ScoreMember(indexScore(e.rank, e.ms), e.id)
		if e.flow == "" {
			continue
		}
		list := byFlow[e.flow]
		if list == nil {
			list = new([]indexEntry)
			byFlow[e.flow] = list
			flows = append(flows, e.flow)
		}
		*list = append(*list, e)
	}
	cmds := rueidis.Commands{all.Build()}
	for _, flow := range flows {
		zadd := c.B().Zadd().Key(b.flowIndexKey(flow)).Gt().ScoreMember()
		for _, e := range *byFlow[flow] {
			zadd = zadd.ScoreMember(indexScore(e.rank, e.ms), e.id)
		}
		cmds = append(cmds, zadd.Build())
	}
	named, prune := b.upkeep(flows)
	cmds = append(cmds, prune...)
	if len(named) > 0 {
		// After the ZADDs: a flow is named once it has a member.
		cmds = append(cmds, c.B().Sadd().Key(b.flowsKey()).Member(named...).Build())
		b.noteNamed(named, entries)
	}
	return cmds
}

// upkeep returns, for a write into the queue's index and the indexes of
// flows, the flows due to be named in the flows set and the commands
// that prune the keys due for it. It does not take the flows as named:
// whoever names them says so (noteNamed) once it has, for a script that
// names only the flows of the tasks it records (see lib/index.lua) may
// record none of them.
func (b *Backend) upkeep(flows []string) (named []string, prune rueidis.Commands) {
	now := time.Now()
	keys := []string{b.indexKey()}
	b.index.mu.Lock()
	defer b.index.mu.Unlock()
	for _, flow := range flows {
		keys = append(keys, b.flowIndexKey(flow))
		if last, ok := b.index.named[flow]; !ok || now.Sub(last) >= renameEvery {
			named = append(named, flow)
		}
	}
	return named, b.pruneLocked(keys, now)
}

// noteNamed takes as named in the flows set (see upkeep), from now, the
// flows of named that an entry of written has: the flows that a write of
// written into the index named. Two writes of one flow in the meantime
// both name it, which costs an SADD and nothing else.
func (b *Backend) noteNamed(named []string, written []indexEntry) {
	if len(named) == 0 {
		return
	}
	now := time.Now()
	b.index.mu.Lock()
	defer b.index.mu.Unlock()
	for _, flow := range named {
		if slices.ContainsFunc(written, func(e indexEntry) bool { return e.flow == flow }) {
			due(&b.index.named, flow, now, 0)
		}
	}
}

// inScript reports whether the scripts that change tasks write the index
// themselves (see lua/lib/index.lua): on a single Redis, where a script
// reaches the queue's keys, so that a task and its index entry change in
// one step. On a Cluster client the index is on the queue's slot, not
// the task's, and is written by commands on that slot.
func (b *Backend) inScript() bool { return !b.cluster }

// recorded returns the entries of index, one per call of a batched
// script, whose call the script's replies do not refuse.
func recorded(index []indexEntry, replies []rueidis.RedisMessage) []indexEntry {
	var out []indexEntry
	for i, r := range replies {
		if i < len(index) && r.Error() == nil {
			out = append(out, index[i])
		}
	}
	return out
}

// scriptIndex returns the values of index_init (lua/lib/index.lua) for a
// script that writes entries into the index, the flows it names in the
// flows set if it records a task of theirs, and the commands that prune
// the index keys it writes when due, which follow it: the queue's index
// key, the flows set and the flows to name when due, or, on a Cluster
// client ("" for the index), values that write nothing. Pruning only
// removes tasks that ended a retention ago, which no step of a task
// needs done. Once the script has run, the caller notes the flows it
// named (noteNamed, with the entries of the tasks it recorded): not
// before, or a flow whose first task the script refuses would be taken
// as named, and stay out of the flows set until renameEvery has passed.
func (b *Backend) scriptIndex(entries []indexEntry) (values, named []string, prune rueidis.Commands) {
	if !b.inScript() {
		return []string{"", "", "0"}, nil, nil
	}
	var flows []string
	for _, e := range entries {
		if e.flow != "" && !slices.Contains(flows, e.flow) {
			flows = append(flows, e.flow)
		}
	}
	if len(entries) > 0 {
		named, prune = b.upkeep(flows)
	}
	return append([]string{b.indexKey(), b.flowsKey(), strconv.Itoa(len(named))}, named...), named, prune
}

// indexValues returns the values of index_add (lua/lib/index.lua) for
// entry e, if indexed: its score and flow; "" for both when it is not
// indexed or the script does not write the index.
func (b *Backend) indexValues(e indexEntry, indexed bool) (score, flow string) {
	if !indexed || !b.inScript() {
		return "", ""
	}
	return formatScore(indexScore(e.rank, e.ms)), e.flow
}

// pruneLocked returns the commands that remove, from each of keys due for
// it, the tasks that ended more than a retention before now.
// b.index.mu is held.
func (b *Backend) pruneLocked(keys []string, now time.Time) rueidis.Commands {
	var cmds rueidis.Commands
	cutoff := now.Add(-b.cfg.Retention).UnixMilli()
	for _, key := range keys {
		if !due(&b.index.pruned, key, now, pruneEvery) {
			continue
		}
		for _, rank := range []int64{stateRanks[progress.StateSuccess], stateRanks[progress.StateFailure]} {
			cmds = append(cmds, b.client.B().Zremrangebyscore().Key(key).
				Min(formatScore(indexScore(rank, 0))).Max("("+formatScore(indexScore(rank, cutoff))).Build())
		}
	}
	return cmds
}

// createdEntry is the index entry of a task just queued: PENDING since
// it was accepted (Task.EnqueuedAt, now when unset).
func createdEntry(t *queue.Task, now time.Time) indexEntry {
	at := t.EnqueuedAt
	if at.IsZero() {
		at = now
	}
	return indexEntry{id: t.ID, flow: t.Flow, rank: stateRanks[progress.StatePending], ms: at.UnixMilli()}
}

// indexErrors logs the first error of the replies of index commands.
func (b *Backend) indexErrors(res []rueidis.RedisResult) {
	for _, r := range res {
		if err := r.Error(); err != nil {
			b.log.Warn("flows: could not write the task index; the listings will repair it", "err", err)
			return
		}
	}
}
