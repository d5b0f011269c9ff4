package redisbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Task record hash fields: rec holds what does not change once the task
// is queued (see encodeRec); attempt and cancelled change; prev, present
// once a worker gave the task back (Retry), says why that attempt ended
// (a queue.AttemptEnd), and prevof which attempt that was (a fetch that
// takes over a lease sets prev, and counted, alone); handbacks, present once a worker gave it back
// through no fault of its flow, counts those hand-backs
// (queue.Task.HandBacks); hookretries, present once a worker gave the
// ended task back for its finish hooks, counts those
// (queue.Task.HookRetries); noruns, present once a worker let the task go
// without running its flow, counts those leases (queue.Task.NoRuns), and
// norunof is the attempt it counted last (see lua/no_run.lua); counted,
// present once an attempt that counts ended (a Retry for one, or a fetch
// that took a lease over), says why the last of those ended
// (queue.Task.CountedEnd), which hand-backs leave alone.
const (
	recRec         = "rec"
	recAttempt     = "attempt"
	recCancelled   = "cancelled"
	recPrev        = "prev"
	recHandBacks   = "handbacks"
	recHookRetries = "hookretries"
	recPrevOf      = "prevof"
	recNoRuns      = "noruns"
	recCounted     = "counted"
)

// recordFieldNames are the fields a lease or Get reads, in the order of a
// record's values: the record's, then the snapshot's state, which a lease
// reports (FetchWithState), then the end of the attempt given back last,
// the hand-backs, the hook retries, which attempt's end prev tells
// (for queue.Task.HooksDue, see decodeRecord), the leases that did not
// run the flow and the end of the last attempt that counted.
var recordFieldNames = [...]string{recRec, recAttempt, recCancelled, fieldState, recPrev, recHandBacks, recHookRetries, recPrevOf, recNoRuns, recCounted}

// Indexes of the fields in recordFieldNames and record.
const (
	iRec = iota
	iAttempt
	iCancelled
	iState
	iPrev
	iHandBacks
	iHookRetries
	iPrevOf
	iNoRuns
	iCounted
)

// record is a task record as read: the value of each field of
// recordFieldNames, "" for one that is missing.
type record [len(recordFieldNames)]string

// readRecord reads the reply of an HMGET of recordFieldNames.
func readRecord(reply rueidis.RedisResult) (r record, err error) {
	m, err := reply.ToMessage()
	if err != nil {
		return r, err
	}
	return r, hmgetValues(m, r[:])
}

// hmgetValues puts the values of an HMGET reply into dst, one per field
// asked for, "" for a missing field.
func hmgetValues(reply rueidis.RedisMessage, dst []string) error {
	values, err := reply.ToArray()
	if err != nil {
		return err
	}
	if len(values) != len(dst) {
		return fmt.Errorf("unexpected reply of %d values", len(values))
	}
	for i, v := range values {
		dst[i], _ = v.ToString() // "" for a missing field
	}
	return nil
}

// streamField is the field of a queue stream entry that holds the task id;
// wakeField is the one field of a wake stream entry.
const (
	streamField = "task"
	wakeField   = "w"
)

// Enqueue implements queue.Backend in one round trip, on a single Redis
// in one script (lua/enqueue.lua): the task record, its expiry, its
// entry in the task index and the stream entry (or, for a task due
// later, the delayed-set member) are written in one step, so that a
// process that dies, or a connection that breaks, never leaves a record
// whose task is not queued (a queue.Broker takes Create and Enqueue for a
// task whose progress another store keeps, and a retry with the task's
// idempotency key that finds its record gives the task's id). A task of
// a limited flow (Task.Limit) goes to the queue's starting set, ahead of
// the script in its round trip, then to its flow's gate, in a second
// round trip (see limit.go and starts.go). On a Redis Cluster client the
// task goes to the queue's starting set, then its record is written (the
// same script, which neither indexes nor queues it there), then it is
// indexed and queued: three round trips (a queue.Broker enqueues so a
// task with an idempotency key, whose id nobody may be given for a
// record left unmarked; CreateAndEnqueue marks and records in one).
//
// The script runs by its SHA-1; when Redis has lost it, it is sent whole
// in a second round trip (see runScriptAfter). A Redis that refuses
// writes (OOM, NOREPLICAS, see refusedUnrun) refuses it at its first
// write, never after one: the record is not taken without its queue
// entry.
func (b *Backend) Enqueue(ctx context.Context, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	now := time.Now()
	op := "enqueue task " + t.ID
	fields := recordFields(t)
	var begin rueidis.Completed
	if b.inSteps(t) {
		var f [2]string
		f, begin = b.beginStart(t, now)
		fields = append(fields, f)
	}
	entry := createdEntry(t, now)
	if b.cluster {
		// The record and the queue's keys are on different nodes, whose
		// commands a pipeline does not order: the record must exist
		// before a worker can take the entry, or it drops the task. The
		// starting set tells a start cut in between (see starts.go).
		if err := b.send(ctx, op, rueidis.Commands{begin}); err != nil {
			return err
		}
		args, _, _ := b.enqueueArgs(t, now, fields, entry)
		if err := b.runEnqueue(ctx, op, t.ID, nil, args, nil, waitNever); err != nil {
			return err
		}
		if err := b.cut(t); err != nil {
			return err
		}
		if t.Limit.On() {
			return b.admitStarted(ctx, t, now)
		}
		// The index entry before the commands that queue the task and
		// mark its start done: a start cut in between is swept.
		after := append(b.queueCommands(t, now), b.endStart(t))
		return b.sendIndexed(ctx, op, nil, b.indexCommands([]indexEntry{entry}), after, b.durable())
	}
	var before rueidis.Commands
	if t.Limit.On() {
		// Before the record, in the same pipeline (step 1 of
		// starts.go): a single Redis runs it in order.
		before = rueidis.Commands{begin}
	}
	args, named, prune := b.enqueueArgs(t, now, fields, entry)
	kind := waitNever
	if b.durable() {
		kind = waitFor[enqueueScript]
	}
	if err := b.runEnqueue(ctx, op, t.ID, before, args, prune, kind); err != nil {
		return err
	}
	b.noteNamed(named, []indexEntry{entry})
	if !t.Limit.On() {
		return nil
	}
	if err := b.cut(t); err != nil {
		return err
	}
	return b.admitStarted(ctx, t, now)
}

// enqueueArgs returns the ARGV values of lua/enqueue.lua for t, whose
// record has fields, enqueued at now, with its index entry entry, the
// flows the script names in the flows set and the commands that prune
// the index when due, which follow it (see scriptIndex). On a Cluster
// client the script neither queues nor indexes the task.
func (b *Backend) enqueueArgs(t *queue.Task, now time.Time, fields [][2]string, entry indexEntry) (args, named []string, prune rueidis.Commands) {
	queued, due := "", "0"
	if !b.cluster && !t.Limit.On() {
		queued = "1"
	}
	if !t.RunAt.IsZero() {
		due = strconv.FormatInt(t.RunAt.UnixMilli(), 10)
	}
	score, flow := b.indexValues(entry, true)
	args = make([]string, 0, 16+2*len(fields))
	args = append(args, b.streamKey(), b.delayedKey(), b.wakeKey(),
		strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(maxBlock.Milliseconds(), 10),
		strconv.FormatInt(b.recordTTL(t, now).Milliseconds(), 10), t.ID, queued, due, score, flow,
		strconv.Itoa(2*len(fields)))
	for _, f := range fields {
		args = append(args, f[0], f[1])
	}
	var entries []indexEntry
	if !b.cluster {
		entries = []indexEntry{entry}
	}
	indexArgs, named, prune := b.scriptIndex(entries)
	return append(args, indexArgs...), named, prune
}

// runEnqueue runs lua/enqueue.lua for task id with args, in one round
// trip after the commands before and followed by the pruning commands
// prune (whose errors it only logs, see indexErrors) and the WAIT of
// kind, and returns the first error of before and the script's, for op.
func (b *Backend) runEnqueue(ctx context.Context, op, id string, before rueidis.Commands, args []string, prune rueidis.Commands, kind waitKind) error {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	prior, reply, pruned := b.runScriptAfter(ctx, before, enqueueScript, kind, []string{b.taskKey(id)}, args, prune)
	b.indexErrors(pruned)
	for _, r := range prior {
		if err := r.Error(); err != nil {
			return b.wrap(ctx, op, err)
		}
	}
	if err := reply.Error(); err != nil {
		return b.wrap(ctx, op, err)
	}
	return nil
}

// admitStarted puts t, a task of a limited flow just recorded, in its
// flow's gate (see admitNew), which marks its start done (see starts.go).
// On a Cluster client, whose record's round trip was on the task's slot,
// t's index entry (see index.go) goes in the gate's round trip, ahead of
// the script: a start cut in between is swept.
func (b *Backend) admitStarted(ctx context.Context, t *queue.Task, now time.Time) error {
	if !b.cluster {
		return b.admitNew(ctx, t)
	}
	return b.admitNew(ctx, t, b.indexCommands([]indexEntry{createdEntry(t, now)})...)
}

// expireAtLeast returns the commands that make task id's hash live at
// least ttl from now: they set its expiry if it has none (a hash the
// record has just created) and extend it otherwise (see extendTask).
func (b *Backend) expireAtLeast(id string, ttl time.Duration) rueidis.Commands {
	return rueidis.Commands{
		b.client.B().Pexpire().Key(b.taskKey(id)).Milliseconds(ttl.Milliseconds()).Nx().Build(),
		b.extendTask(id, ttl),
	}
}

// deleteTask returns the commands that delete task id's hash and tell
// its live subscriptions so (goneMessage, on the task's live channel),
// which would otherwise learn it only at their next read of the event
// log. Both go to the task's slot.
func (b *Backend) deleteTask(id string) rueidis.Commands {
	c := b.client
	return rueidis.Commands{
		c.B().Del().Key(b.taskKey(id)).Build(),
		c.B().Spublish().Channel(b.liveChannel(id)).Message(goneMessage).Build(),
	}
}

// extendTask returns the command that moves the expiry of task id's hash
// to ttl from now if that is later: never earlier, since its snapshot may
// have given it longer (see lua/lib/append.lua). It does nothing to a hash
// without an expiry.
func (b *Backend) extendTask(id string, ttl time.Duration) rueidis.Completed {
	return b.client.B().Pexpire().Key(b.taskKey(id)).Milliseconds(ttl.Milliseconds()).Gt().Build()
}

// CreateAndEnqueue does what Create(ctx, t.ID) followed by Enqueue(ctx, t)
// does, in one round trip, which concurrent calls share (see batcher): a
// script records each task's progress snapshot and its queue record (in
// the task's hash, so atomically) and queues the task, at the end of the
// stream when it is due and in the delayed set otherwise. A queue.Broker
// whose store is this Backend (see queue.NewBroker) enqueues through it.
//
// The script runs by its SHA-1 (EVALSHA), so that its text is not sent
// with every call; when Redis has lost it (a restart, SCRIPT FLUSH), it
// fails without running and is sent whole in a second round trip. Nothing
// else is sent with it: had commands that queue the task followed it, a
// lost script would have left tasks queued with no record, which a worker
// drops. On a Redis Cluster client the queue's keys are on another node
// than the task's, whose commands a pipeline does not order, so the task
// is queued by commands sent once the script has written its record (a
// worker that took the entry first would drop the task as recordless),
// with, in the same round trip, the command that puts the task in the
// queue's starting set, so that a start cut before its queue entry is
// found and its task ended (see starts.go and beginAndRecord): two round
// trips.
//
// A task of a limited flow (Task.Limit) is recorded with the status line
// of a task that waits for a slot, its id put in the queue's starting set
// before the script, in its round trip, and put in its flow's gate in a
// second round trip, which marks its start done (see limit.go and
// starts.go).
//
// It returns an error wrapping progress.ErrExists for an id that is taken
// (then nothing is written).
func (b *Backend) CreateAndEnqueue(ctx context.Context, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	return b.create(ctx, t, nil, true)
}

// CreateAndEnqueueNew is CreateAndEnqueue for a task whose id queue.NewID
// drew for it: 128 random bits, which no other task can have. It takes
// the id as free and does not check it, which saves a command (EXISTS)
// per task; CreateAndEnqueue, whose caller may give an id that is taken,
// checks it in the same script. A queue.Broker whose store is this
// Backend enqueues the tasks it names itself through it, and through
// CreateAndEnqueueLimited, which is this with caller limits, those of a
// limited caller.
//
// Given an id that is taken, it overwrites that task's record and
// snapshot: give it none but ids that queue.NewID has just drawn.
func (b *Backend) CreateAndEnqueueNew(ctx context.Context, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	return b.create(ctx, t, nil, false)
}

// CreateAndEnqueueOnce records t as PENDING and queues it, as
// CreateAndEnqueue does, in one script, unless a task with t's id has a
// snapshot: then it writes nothing and returns an error wrapping
// progress.ErrExists. A queue.Broker uses it for a task with an
// idempotency key, whose id the key gives: the key's claim and the queue
// entry are then one step, in the batch of the other creates
// (Config.EnqueueDelay), where they took two round trips of their own.
//
// It returns an error wrapping errors.ErrUnsupported, having written
// nothing, where the script does not queue the task itself: on a Redis
// Cluster client (the queue's keys are on another slot) and for a flow
// with limits (t.Limit, which waits at its gate). A process that died
// between the record and the queue entry would leave the key claimed by
// a task that never runs; the Broker takes its two steps instead, which
// a later Enqueue with the key completes.
func (b *Backend) CreateAndEnqueueOnce(ctx context.Context, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	if b.cluster || t.Limit.On() {
		return fmt.Errorf("redisbackend: enqueue task %s in one step: %w", t.ID, errors.ErrUnsupported)
	}
	return b.create(ctx, t, nil, true)
}

// create is CreateAndEnqueue with the caller-limit values of
// create_task.lua (nil for none); check says whether t's id may be taken
// (the script then checks it), false for one queue.NewID drew for t.
func (b *Backend) create(ctx context.Context, t *queue.Task, limits []string, check bool) error {
	now := time.Now()
	fields := recordFields(t)
	if t.Limit.On() {
		// Its snapshot says what it waits for; the script does not queue
		// it: it goes to its flow's gate below.
		fields = append(fields, [2]string{fieldStatus, t.Limit.Waiting(t.Flow)})
	}
	if b.inSteps(t) {
		f, _ := b.beginStart(t, now)
		fields = append(fields, f)
	}
	args := make([]string, 8, 9+2*len(fields)+len(limits))
	args[0] = strconv.FormatInt(b.keepMS(b.recordTTL(t, now)), 10)
	args[1] = t.ID
	if check {
		args[2] = "1"
	}
	if !b.cluster && !t.Limit.On() {
		args[3] = "1"
	}
	args[4] = "0"
	if !t.RunAt.IsZero() {
		args[4] = strconv.FormatInt(t.RunAt.UnixMilli(), 10)
	}
	args[5], args[6] = b.indexValues(createdEntry(t, now), true)
	args[7] = strconv.Itoa(2 * len(fields))
	for _, f := range fields {
		args = append(args, f[0], f[1])
	}
	args = append(args, strconv.Itoa(len(limits)))
	args = append(args, limits...)
	_, err := b.creates.do(ctx, createCall{task: t, args: args, now: now})
	if replyCode(err) == "EXISTS" {
		return fmt.Errorf("%w: %q", progress.ErrExists, t.ID)
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("redisbackend: enqueue task %s: %w", t.ID, err)
	}
	if err != nil || !t.Limit.On() {
		return err
	}
	if !b.cluster {
		// (A Cluster client's start was cut in runCreates.)
		if err := b.cut(t); err != nil {
			return err
		}
	}
	return b.admitStarted(ctx, t, now)
}

// createCall is one CreateAndEnqueue's share of createTaskScript: its
// task, ARGV values and the time they were made at.
type createCall struct {
	task *queue.Task
	args []string
	now  time.Time
}

// runCreates creates and enqueues a batch of tasks in one round trip: the
// script, which queues the tasks too; on a Cluster client, the script and
// then, in a second round trip, the commands that queue the task.
func (b *Backend) runCreates(ctx context.Context, calls []*batchCall[createCall, struct{}]) {
	init := progress.NewSnapshot()
	keys := make([]string, 0, len(calls))
	for _, call := range calls {
		keys = append(keys, b.taskKey(call.item.task.ID))
	}
	index := make([]indexEntry, len(calls))
	for i, call := range calls {
		index[i] = createdEntry(call.item.task, call.item.now)
	}
	indexArgs, named, prune := b.scriptIndex(index)
	args := batchArgs(append([]string{string(init.State), init.Details.Status, b.streamKey(), b.delayedKey(), b.wakeKey(),
		strconv.FormatInt(time.Now().UnixMilli(), 10), strconv.FormatInt(maxBlock.Milliseconds(), 10)}, indexArgs...),
		calls, func(c *batchCall[createCall, struct{}]) []string { return c.item.args })
	var replies []rueidis.RedisMessage
	var err error
	if b.cluster {
		// A batch is one call here, a start of three steps (see
		// starts.go): the starting set, the record, then the queue
		// entry, which index commands follow (see index.go).
		t, op := calls[0].item.task, "enqueue task "+calls[0].item.task.ID
		_, begin := b.beginStart(t, calls[0].item.now)
		var marked error
		marked, replies, err = b.beginAndRecord(ctx, begin, keys, args)
		if err == nil && replies[0].Error() != nil && marked == nil {
			// Refused, nothing of the task written: its id is another
			// task's, which the starting set must not name (though a
			// sweep would leave that task alone, see lua/end_cut.lua).
			_ = b.send(ctx, op, rueidis.Commands{b.forgetStart(t)})
		}
		if marked != nil && (err != nil || replies[0].Error() == nil) {
			// The record may be written and its start is not marked: no
			// sweep would find it. Take it back, and fail the start.
			if derr := b.send(ctx, op, b.deleteTask(t.ID)); derr != nil {
				b.log.Warn("flows: could not delete the record of a start whose mark failed", "task_id", t.ID, "err", derr)
			}
			err = marked
		}
		if err == nil && replies[0].Error() == nil {
			err = b.cut(t)
		}
		if err == nil && replies[0].Error() == nil && !t.Limit.On() {
			// (A task of a limited flow goes to its gate: admitStarted.)
			// The index entry first: a start cut before its queue
			// entry or its mark of done is swept (see starts.go).
			cmds := append(b.queueCommands(t, calls[0].item.now), b.endStart(t))
			err = b.sendIndexed(ctx, op, nil, b.indexCommands(index), cmds, false)
		}
	} else {
		// The tasks of limited flows go to the starting set before the
		// script, which records them, and to their gates after it (see
		// starts.go). The script writes the index entries of the tasks
		// it records (see index.go); only pruning follows it.
		var begins rueidis.Commands
		for _, call := range calls {
			if call.item.task.Limit.On() {
				_, begin := b.beginStart(call.item.task, call.item.now)
				begins = append(begins, begin)
			}
		}
		// A ZADD into the starting set that failed (a full Redis) is
		// not looked at: the script then failed too, or its task goes
		// to its gate next with no marker to end it by.
		reply, indexed := b.runLeaseScriptAfter(ctx, begins, createTaskScript, keys, args, prune)
		b.indexErrors(indexed)
		replies, err = batchReplies(reply, len(calls))
		if err == nil {
			b.noteNamed(named, recorded(index, replies))
		}
		if err == nil && len(begins) > 0 {
			b.forgetRefused(ctx, calls, replies)
		}
	}
	for i, call := range calls {
		if err != nil {
			call.err = b.wrap(ctx, "enqueue task "+call.item.task.ID, err)
			continue
		}
		call.err = replies[i].Error()
	}
}

// beginAndRecord runs, on a Cluster client, the first two steps of a
// CreateAndEnqueue in one round trip (see starts.go): begin, which marks
// the start in the queue's starting set, and createTaskScript, which
// records the task on its own slot. The two nodes run them in either
// order; where one of them is not applied, the caller finds it here:
// marked is begin's error, replies and err the script's. A process that
// dies with both on their way may leave a record whose mark never
// landed: a task whose id nobody was given (the start had not returned,
// and a start with an idempotency key does not come here, see
// queue.Broker), kept until it expires like any record.
func (b *Backend) beginAndRecord(ctx context.Context, begin rueidis.Completed, keys, args []string) (marked error, replies []rueidis.RedisMessage, err error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	mark, reply, _ := b.runScriptAfter(ctx, rueidis.Commands{begin}, createTaskScript, waitNever, keys, args, nil)
	if err := mark[0].Error(); err != nil {
		marked = b.wrap(ctx, "mark the start of a task", err)
	}
	replies, err = batchReplies(reply, len(keys))
	return marked, replies, err
}

// sendIndexed runs before, the index commands index and after, in that
// order, in one pipelined round trip under OpTimeout, and returns the
// first error of before and after. An error of the index commands is
// only logged: the index is repaired by the listings (see index.go), an
// operation is not failed for it. With wait set (durable mode), WAIT
// follows them in the same round trip, and enough replicas must confirm
// them. A start gives its record in before and the commands that queue
// it in after (see index.go): a task is listed once it exists, and
// before it can run.
func (b *Backend) sendIndexed(ctx context.Context, op string, before, index, after rueidis.Commands, wait bool) error {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	all := make(rueidis.Commands, 0, len(before)+len(index)+len(after)+1)
	all = append(append(append(all, before...), index...), after...)
	if wait {
		all = append(all, b.waitCommand())
	}
	res := b.client.DoMulti(ctx, all...)
	for i, r := range res[:len(all)-btoi(wait)] {
		if i >= len(before) && i < len(before)+len(index) {
			continue
		}
		if err := r.Error(); err != nil {
			return b.wrap(ctx, op, err)
		}
	}
	b.indexErrors(res[len(before) : len(before)+len(index)])
	if wait {
		if err := b.replicated(res[len(res)-1]); err != nil {
			return b.wrap(ctx, op, err)
		}
	}
	return nil
}

// btoi is 1 for true and 0 for false.
func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// recordTTL is how long a new task's keys must live: the retention,
// plus the wait of a task due later.
func (b *Backend) recordTTL(t *queue.Task, now time.Time) time.Duration {
	return addDur(b.cfg.Retention, max(t.RunAt.Sub(now), 0))
}

// queueCommands returns the commands that queue t: a stream entry when it
// is due, a delayed-set member otherwise, with a wake-up for the waiting
// fetchers when it is due before they would look again; none for a task
// of a limited flow.
func (b *Backend) queueCommands(t *queue.Task, now time.Time) rueidis.Commands {
	if t.Limit.On() {
		return nil // it goes to its flow's gate (see admitNew)
	}
	c := b.client
	if !t.RunAt.After(now) {
		return rueidis.Commands{c.B().Xadd().Key(b.streamKey()).Id("*").FieldValue().FieldValue(streamField, t.ID).Build()}
	}
	cmds := rueidis.Commands{c.B().Zadd().Key(b.delayedKey()).ScoreMember().ScoreMember(float64(t.RunAt.UnixMilli()), t.ID).Build()}
	if t.RunAt.Sub(now) < maxBlock {
		cmds = append(cmds, b.wakeCommand())
	}
	return cmds
}

// wakeCommand adds an entry to the wake stream, which ends the blocking
// wait of every Fetch (see Fetch); the stream keeps only its last entry.
func (b *Backend) wakeCommand() rueidis.Completed {
	c := b.client
	return c.B().Xadd().Key(b.wakeKey()).Maxlen().Threshold("1").Id("*").FieldValue().FieldValue(wakeField, "1").Build()
}

// send runs cmds in one pipelined round trip under OpTimeout and returns
// the first error.
func (b *Backend) send(ctx context.Context, op string, cmds rueidis.Commands) error {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return b.wrap(ctx, op, err)
		}
	}
	return nil
}

// recordFields returns the hash fields of t's record, as field-value
// pairs: rec, and attempt and cancelled when they are not zero.
func recordFields(t *queue.Task) [][2]string {
	fields := make([][2]string, 1, 3)
	fields[0] = [2]string{recRec, encodeRec(t)}
	if t.Attempt != 0 {
		fields = append(fields, [2]string{recAttempt, strconv.Itoa(t.Attempt)})
	}
	if t.Cancelled {
		fields = append(fields, [2]string{recCancelled, "1"})
	}
	return fields
}

// encodeRec returns the value of a task's rec field: what does not change
// once it is queued, in one string, so that a task's record is one field
// to write and read rather than eight. It is six decimal integers, each
// followed by a space: max attempts, time limit (ns), enqueued at and run
// at (Unix ns, 0 for none), the lengths in bytes of the flow's name and of
// RequeuedFrom; then the flow's name, RequeuedFrom and the inputs.
//
// The record of a task with an owner starts with "o" and has a seventh
// integer, the length of the owner, whose bytes follow RequeuedFrom. A
// task without one has the record it had before owners were recorded.
//
// The record of a task enqueued in a trace (Task.TraceParent) starts with
// "t", the length of its trace context, a space and the trace context:
// the traceparent, then, if there is one, a space and the tracestate (a
// traceparent has no space); the rest of the record follows. A task
// enqueued outside a trace has the record it had before tracing, so it
// costs not one byte more.
//
// The record of a task re-queued to resume its dead task (Task.Resume)
// starts with "r", before all of that; other tasks' records are as they
// were.
func encodeRec(t *queue.Task) string {
	var runAt int64
	if !t.RunAt.IsZero() {
		runAt = t.RunAt.UnixNano()
	}
	b := make([]byte, 0, 80+len(t.Flow)+len(t.RequeuedFrom)+len(t.Owner)+len(t.Inputs)+len(t.TraceParent)+len(t.TraceState))
	if t.Resume {
		b = append(b, resumeRec)
	}
	if t.TraceParent != "" {
		n := len(t.TraceParent)
		if t.TraceState != "" {
			n += 1 + len(t.TraceState)
		}
		b = append(b, tracedRec)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, ' ')
		b = append(b, t.TraceParent...)
		if t.TraceState != "" {
			b = append(b, ' ')
			b = append(b, t.TraceState...)
		}
	}
	nums := []int64{int64(t.MaxAttempts), int64(t.Timeout), t.EnqueuedAt.UnixNano(), runAt,
		int64(len(t.Flow)), int64(len(t.RequeuedFrom)), int64(len(t.Owner))}
	if t.Owner == "" {
		nums = nums[:6]
	} else {
		b = append(b, ownedRec)
	}
	for _, n := range nums {
		b = strconv.AppendInt(b, n, 10)
		b = append(b, ' ')
	}
	b = append(b, t.Flow...)
	b = append(b, t.RequeuedFrom...)
	b = append(b, t.Owner...)
	b = append(b, t.Inputs...)
	return string(b)
}

// ownedRec, tracedRec and resumeRec start the rec field of a task with
// an owner, of a task enqueued in a trace and of a task that resumes its
// dead task (see encodeRec).
const (
	ownedRec  = 'o'
	tracedRec = 't'
	resumeRec = 'r'
)

// decodeRec fills t from the value of a rec field (see encodeRec).
func decodeRec(rec string, t *queue.Task) error {
	if rec != "" && rec[0] == resumeRec {
		t.Resume, rec = true, rec[1:]
	}
	if rec != "" && rec[0] == tracedRec {
		size, rest, ok := strings.Cut(rec[1:], " ")
		n, err := strconv.Atoi(size)
		if !ok || err != nil || n < 0 || n > len(rest) {
			return errors.New("field rec: malformed trace context")
		}
		t.TraceParent, t.TraceState, _ = strings.Cut(rest[:n], " ")
		rec = rest[n:]
	}
	var n [7]int64
	nums := n[:6]
	if rec != "" && rec[0] == ownedRec {
		rec, nums = rec[1:], n[:]
	}
	for i := range nums {
		field, rest, ok := strings.Cut(rec, " ")
		if !ok {
			return errors.New("field rec: too short")
		}
		v, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return fmt.Errorf("field rec: %w", err)
		}
		n[i], rec = v, rest
	}
	flowLen, fromLen, ownerLen := n[4], n[5], n[6]
	if left := int64(len(rec)); flowLen < 0 || fromLen < 0 || ownerLen < 0 ||
		flowLen > left || fromLen > left || ownerLen > left || flowLen+fromLen+ownerLen > left {
		return errors.New("field rec: lengths out of range")
	}
	t.MaxAttempts = int(n[0])
	t.Timeout = time.Duration(n[1])
	t.EnqueuedAt = time.Unix(0, n[2]).UTC()
	if n[3] != 0 {
		t.RunAt = time.Unix(0, n[3]).UTC()
	}
	t.Flow, rec = rec[:flowLen], rec[flowLen:]
	t.RequeuedFrom, rec = rec[:fromLen], rec[fromLen:]
	t.Owner, rec = rec[:ownerLen], rec[ownerLen:]
	if rec != "" {
		t.Inputs = json.RawMessage(rec)
	}
	return nil
}

// decodeRecord turns the record of task id back into a Task. ok is false
// for a record without rec: what HINCRBY leaves of a task that expired,
// or a task that has a progress snapshot only. Its HooksDue is set when
// prev tells queue.EndHooksPending and prevof is still the record's
// attempt: no lease has taken the task since it was given back for its
// finish hooks (a lease reads the attempt it incremented, so a leased
// task never has it).
func decodeRecord(id string, r record) (t *queue.Task, ok bool, err error) {
	if r[iRec] == "" {
		return nil, false, nil
	}
	t = &queue.Task{ID: id, Cancelled: r[iCancelled] == "1"}
	if t.Attempt, err = intField(r, iAttempt); err != nil {
		return nil, false, err
	}
	if err := decodeRec(r[iRec], t); err != nil {
		return nil, false, err
	}
	t.PreviousEnd = queue.AttemptEnd(r[iPrev])
	t.CountedEnd = queue.AttemptEnd(r[iCounted])
	if t.HandBacks, err = intField(r, iHandBacks); err != nil {
		return nil, false, err
	}
	if t.HookRetries, err = intField(r, iHookRetries); err != nil {
		return nil, false, err
	}
	if t.NoRuns, err = intField(r, iNoRuns); err != nil {
		return nil, false, err
	}
	t.HooksDue = t.PreviousEnd == queue.EndHooksPending && r[iPrevOf] != "" && r[iPrevOf] == r[iAttempt]
	return t, true, nil
}

// intField returns the number in field i of r, 0 when the field is
// empty (not written yet).
func intField(r record, i int) (int, error) {
	if r[i] == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(r[i])
	if err != nil {
		return 0, fmt.Errorf("field %s: %w", recordFieldNames[i], err)
	}
	return n, nil
}

// Get implements queue.Backend.
func (b *Backend) Get(ctx context.Context, id string) (*queue.Task, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("%w: %w", queue.ErrNotFound, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	fields, err := readRecord(b.client.Do(ctx, b.client.B().Hmget().Key(b.taskKey(id)).Field(recordFieldNames[:]...).Build()))
	if err != nil {
		return nil, b.wrap(ctx, "get task "+id, err)
	}
	t, ok, err := decodeRecord(id, fields)
	if err != nil {
		return nil, fmt.Errorf("redisbackend: decode task %q: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return t, nil
}
