package redisbackend

import (
	"cmp"
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Starts cut between their steps. A start records a task, then queues it
// (puts it in the stream, the delayed set or its flow's gate), and where
// these are not one script, a start cut between them (its process dies,
// Redis answers an error or does not answer) would leave a PENDING task
// that no worker ever runs: listed and counted as pending, and watched in
// PENDING until it expires, though its caller was told of an error or of
// nothing (a retry with the same idempotency key is given its id). The
// starts taken in steps are:
//
//   - every start on a Redis Cluster client (CreateAndEnqueue, Enqueue):
//     the task's keys and the queue's are on different slots, and the
//     record must be written first, or a worker drops the entry;
//   - a start of a task of a limited flow (Task.Limit), on any client:
//     its record is written, then the admit script puts it in its flow's
//     gate (see limit.go);
//   - a re-queue of a dead task (Requeue), on any client: the new task's
//     record is written, then a script takes the dead task out of the
//     dead-letter set and queues the new one (see dead.go).
//
// Each of them takes these steps:
//
//  1. it adds the task's id to the starting set of the queue
//     (P:{q:Q}:starting, a sorted set scored by the Unix ms of the
//     start, by the starter's clock); on a single Redis, in the round
//     trip of the record, before it (a pipeline runs in order there); on
//     a Cluster client, for CreateAndEnqueue, in the round trip of the
//     record too, which the two nodes apply in either order (see
//     beginAndRecord: a mark refused takes the record back), and for
//     Enqueue (a start with an idempotency key, see queue.Broker) and
//     Requeue in a round trip of its own;
//  2. it records the task, whose hash gets that score in its field
//     starting;
//  3. it queues the task and marks its start done, in one step on the
//     queue's slot: ZADD XX to doneScore after the commands that queue it
//     in their pipeline (see endStart), or inside the script that queues
//     it (admit.lua, requeue.lua). The task's entry in the task index
//     goes ahead of them, in their round trip (on a single Redis, with
//     the record, or written by the create script; see index.go): a task
//     cut before this step is listed, or is indexed by the sweep that
//     ends it.
//
// A start succeeds (and a queue.Broker returns the task's id) only once
// its steps have. An id that keeps its first score in the starting set
// for longer than cutAfter (a minute, or ten times Config.OpTimeout if
// longer) is a start that was cut: the heartbeats of the workers (see
// Heartbeat) look for such ids, once per sweepEvery and process, in the
// round trip of a heartbeat (which also clears the starts done), and end
// each task as FAILURE with the status cutStatus, live watchers and the
// task index included, if its record is still the one that start wrote
// (its field starting holds the score), is PENDING and has never been
// leased (no attempt recorded); then they remove the id, after the index
// entries in their round trip: a sweep cut before them leaves the id to
// the next sweep, which finds the task ended so and indexes it again
// (see lua/end_cut.lua). A task that a worker has leased meanwhile is
// left to run: it was queued, so its index entry was written. Ending rather than queueing
// the task keeps the promise made to the caller, who was told that the
// start failed (or was told nothing): the task does not run, and a retry
// with the same idempotency key gets the id of a task that says why it
// did not. A re-queue cut so has left its dead task in the dead-letter
// set (the script that takes it out is the one that queues the new
// task): it can be re-queued again, as a task of its own.
//
// A task whose progress is kept by another store than this Backend (a
// queue.Broker with another store takes the store's Create, then
// Enqueue) has no state in its hash, and a sweep cannot end it: it
// deletes its hash instead, and takes it out of the index, under the
// same conditions. Such a start's caller may retry it with its
// idempotency key: the Broker then asks StartDone of a record it finds,
// and takes the record of a start still marked here for none, so that
// the retry, having waited for a start under way, queues the task
// itself rather than be given the id of a task nobody runs. A start on
// a single Redis of a task of a flow without limits records and queues
// it in one script (create_task.lua, or enqueue.lua for Enqueue) and
// takes none of this.

// cutStatus is the status line of a task whose start was cut.
const cutStatus = "Not started: its start was interrupted before the task was queued"

// recStarting is the field of a task hash that holds the score of its id
// in the starting set, for a start taken in steps.
const recStarting = "starting"

// sweepBatch bounds the cut starts one sweep ends.
const sweepBatch = 100

// sweepEvery is how often a process looks for cut starts, and for
// entries pending with no lease (see reclaim.go), in the round trip of a
// heartbeat.
const sweepEvery = 10 * time.Second

// sweepState is when a Backend last looked for cut starts, and every
// (set by tests) replaces sweepEvery.
type sweepState struct {
	mu    sync.Mutex
	last  time.Time
	every time.Duration
}

// due reports whether a sweep is due at now, and if so records now.
func (s *sweepState) due(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.last) < s.period() {
		return false
	}
	s.last = now
	return true
}

// period is how often a sweep is due: sweepEvery, or every when set.
func (s *sweepState) period() time.Duration { return cmp.Or(s.every, sweepEvery) }

// cutAfter is how long a start may stay in the starting set before it is
// taken as cut: every step of a start is bounded by OpTimeout.
func (b *Backend) cutAfter() time.Duration {
	if b.cutAfterSet {
		return b.cutAfterTest
	}
	return max(time.Minute, min(b.cfg.OpTimeout, math.MaxInt64/10)*10)
}

// startingKey is the queue's starting set.
func (b *Backend) startingKey() string { return b.qkeys.starting }

// inSteps reports whether a start of t is taken in steps, and marks
// itself in the starting set (see above): on a Cluster client, and for a
// task of a limited flow. (Requeue always is.)
func (b *Backend) inSteps(t *queue.Task) bool { return b.cluster || t.Limit.On() }

// beginStart returns the field of t's record and the command that add t
// to the starting set (step 1 above), for a start that begins at now.
func (b *Backend) beginStart(t *queue.Task, now time.Time) ([2]string, rueidis.Completed) {
	ms := now.UnixMilli()
	cmd := b.client.B().Zadd().Key(b.startingKey()).ScoreMember().ScoreMember(float64(ms), t.ID).Build()
	return [2]string{recStarting, strconv.FormatInt(ms, 10)}, cmd
}

// cut calls the test hook cutStart, if set, where a start of t is taken
// in steps, between its record and the step that queues it, and returns
// its error.
func (b *Backend) cut(t *queue.Task) error {
	if b.cutStart == nil {
		return nil
	}
	return b.cutStart(t.ID)
}

// forgetRefused removes from the starting set the tasks of limited flows
// of a batch of creates on a single Redis that the create script refused
// (replies): their ids are others' (see runCreates), or nothing of them
// was written. It costs a round trip only when there are some.
func (b *Backend) forgetRefused(ctx context.Context, calls []*batchCall[createCall, struct{}], replies []rueidis.RedisMessage) {
	var refused []string
	for i, call := range calls {
		if call.item.task.Limit.On() && replies[i].Error() != nil {
			refused = append(refused, call.item.task.ID)
		}
	}
	if len(refused) == 0 {
		return
	}
	c := b.client
	if err := b.send(ctx, "forget refused starts", rueidis.Commands{c.B().Zrem().Key(b.startingKey()).Member(refused...).Build()}); err != nil {
		b.log.Warn("flows: could not take refused starts out of the starting set", "err", err)
	}
}

// doneScore is the score of a start that has queued its task: beyond
// every Unix ms.
const doneScore = 1 << 53

// endStart returns the command that follows the commands that queue t
// in their pipeline (step 3 above): it marks t's start done, with a ZADD
// XX to doneScore. Not a ZREM: a full Redis (maxmemory, noeviction)
// refuses the ZADD as it refuses the XADD or ZADD that queue the task,
// but would run a ZREM, which frees memory; the start would then fail
// and leave no trace of its task.
func (b *Backend) endStart(t *queue.Task) rueidis.Completed {
	return b.client.B().Zadd().Key(b.startingKey()).Xx().ScoreMember().ScoreMember(doneScore, t.ID).Build()
}

// forgetStart returns the command that removes t from the starting set,
// for a start refused by its record's script, or a re-queue refused
// after its record was written and deleted again.
func (b *Backend) forgetStart(t *queue.Task) rueidis.Completed {
	return b.client.B().Zrem().Key(b.startingKey()).Member(t.ID).Build()
}

// sweepCommands returns the commands of a sweep at now: one removes the
// starts done, the other, last, reads the oldest starts begun more than
// cutAfter before now, with their scores.
func (b *Backend) sweepCommands(now time.Time) rueidis.Commands {
	c := b.client
	before := strconv.FormatInt(now.Add(-b.cutAfter()).UnixMilli(), 10)
	return rueidis.Commands{
		c.B().Zremrangebyscore().Key(b.startingKey()).Min(strconv.FormatInt(doneScore, 10)).Max("+inf").Build(),
		c.B().Zrangebyscore().Key(b.startingKey()).Min("-inf").Max(before).Withscores().Limit(0, sweepBatch).Build(),
	}
}

// endCutStarts ends the tasks of the cut starts that the reply of the
// last of sweepCommands lists, as the comment at the top of this file says,
// and returns how many it ended. Each costs a script on its task's slot,
// all of them in one round trip, then their index entries and their
// removal from the starting set in a second one.
func (b *Backend) endCutStarts(ctx context.Context, listed rueidis.RedisResult) (int, error) {
	cut, err := listed.AsZScores()
	if err != nil || len(cut) == 0 {
		return 0, b.wrap(ctx, "read cut starts", err)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	now := time.Now()
	end := []progress.Event{{Type: progress.EventState, State: progress.StateFailure, Status: cutStatus}}
	type call struct {
		id         string
		keys, args []string
	}
	calls := make([]call, 0, len(cut))
	cmds := make(rueidis.Commands, 0, len(cut))
	var bad []string
	for _, z := range cut {
		id := z.Member
		if !queue.ValidID(id) {
			bad = append(bad, id)
			continue
		}
		args, err := b.appendValues(id, "", end, 2, now)
		if err != nil {
			return 0, err
		}
		args[0], args[1] = strconv.FormatInt(b.retentionMS(), 10), strconv.FormatInt(int64(z.Score), 10)
		keys := []string{b.taskKey(id), b.stepsKey(id), b.eventsKey(id)}
		calls = append(calls, call{id, keys, args})
		cmds = append(cmds, endCutScript.evalsha(c, keys, args))
	}
	var res []rueidis.RedisResult
	if len(cmds) > 0 {
		res = c.DoMulti(ctx, cmds...)
	}
	var index, gone []indexEntry
	n := 0
	done := bad
	for i, r := range res {
		if noScript(r.Error()) {
			r = c.Do(ctx, endCutScript.eval(c, calls[i].keys, calls[i].args))
		}
		reply, err := r.ToArray()
		if err != nil || len(reply) < 3 {
			// Left in the starting set for the next sweep.
			b.log.Warn("flows: could not end a task whose start was cut", "task_id", calls[i].id, "err", err)
			continue
		}
		id := calls[i].id
		done = append(done, id)
		ended, _ := reply[0].AsInt64()
		if ended != 1 && ended != 2 && ended != 3 {
			continue
		}
		var t queue.Task
		rec, _ := reply[1].ToString()
		_ = decodeRec(rec, &t)
		if ended == 3 {
			gone = append(gone, indexEntry{id: id, flow: t.Flow})
			b.log.Warn("flows: took back the record of a task whose start was cut between its record and its queue entry, and whose progress another store keeps",
				"task_id", id, "flow", t.Flow)
			continue
		}
		ms := now.UnixMilli()
		if ended == 2 {
			// Ended by a sweep whose round trip was cut before its
			// index entry: indexed again, at its end time.
			if at, err := reply[2].AsInt64(); err == nil && at > 0 {
				ms = at
			}
		}
		index = append(index, indexEntry{id: id, flow: t.Flow, rank: stateRanks[progress.StateFailure], ms: ms})
		if ended == 1 {
			n++
			b.log.Warn("flows: ended a task whose start was cut between its record and its queue entry",
				"task_id", id, "flow", t.Flow)
		}
	}
	if len(done) == 0 {
		return 0, nil
	}
	// The index entries before the removal: a sweep cut in between
	// leaves the starts to the next one, which indexes their tasks again
	// (end_cut.lua tells a task that a sweep ended).
	err = b.sendIndexed(ctx, "forget cut starts", nil, append(b.indexCommands(index), b.unindexCommands(gone)...),
		rueidis.Commands{c.B().Zrem().Key(b.startingKey()).Member(done...).Build()}, false)
	return n, err
}

// unindexCommands returns the commands that take the tasks of entries,
// whose records are gone, out of the queue's index and their flows'.
func (b *Backend) unindexCommands(entries []indexEntry) rueidis.Commands {
	if len(entries) == 0 {
		return nil
	}
	c := b.client
	ids := make([]string, len(entries))
	byFlow := map[string][]string{}
	var flows []string
	for i, e := range entries {
		ids[i] = e.id
		if e.flow == "" {
			continue
		}
		if _, ok := byFlow[e.flow]; !ok {
			flows = append(flows, e.flow)
		}
		byFlow[e.flow] = append(byFlow[e.flow], e.id)
	}
	cmds := rueidis.Commands{c.B().Zrem().Key(b.indexKey()).Member(ids...).Build()}
	for _, flow := range flows {
		cmds = append(cmds, c.B().Zrem().Key(b.flowIndexKey(flow)).Member(byFlow[flow]...).Build())
	}
	return cmds
}

// StartDone reports whether the start that recorded task id is done: it
// has queued the task (or put it in its flow's gate), or it was not
// marked in the queue's starting set (a start in one script), or a sweep
// has ended its task or taken its record back (see above). It is false
// while the id holds the score of a start begun: a start under way, or
// one cut before its queue entry that no sweep has seen yet. A
// queue.Broker whose progress store is not this Backend asks it of the
// record that a start with an idempotency key finds (one ZSCORE on the
// queue's slot, on that path only): the record of a cut start then
// counts as none, and the retry queues the task itself, where a sweep
// could not end it.
func (b *Backend) StartDone(ctx context.Context, id string) (bool, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	score, err := b.client.Do(ctx, b.client.B().Zscore().Key(b.startingKey()).Member(id).Build()).AsFloat64()
	switch {
	case rueidis.IsRedisNil(err):
		return true, nil
	case err != nil:
		return false, b.wrap(ctx, "read the start of task "+id, err)
	}
	return score >= doneScore, nil
}
