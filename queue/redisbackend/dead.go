package redisbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// The dead-letter set of a queue is two keys under the queue's hash tag:
// the dead sorted set (task id scored by the Unix ms it was buried at) and
// the buried hash (task id -> deadEntry JSON). Entries older than the
// retention are pruned by Bury and by Dead, and both keys expire a
// retention after the last Bury, so the set holds at most the tasks buried
// within one retention period.

// deadEntry is what the buried hash keeps of a dead task.
type deadEntry struct {
	Flow     string `json:"flow"`
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
}

// Bury implements queue.Backend in one round trip: one script acknowledges
// the entry and adds the task to the dead-letter set (pruning entries past
// the retention), and the task record's expiry is refreshed as by Ack; a
// lease that did not run the flow (queue.Lease.NoRun) is counted in the
// same round trip (see norun.go). The dead entry's attempts leave out the
// leases that only ran the finish hooks again, and those that did not
// run the flow, this one among them (see queue.DeadTask).
func (b *Backend) Bury(ctx context.Context, l *queue.Lease, reason string) error {
	var info []byte
	var id string
	var also rueidis.Commands
	if l != nil && l.Task != nil {
		id = l.Task.ID
		attempts := l.Task.Attempts()
		if cmd, ok := b.noRunCommand(l); ok {
			also = append(also, cmd)
			attempts--
		}
		var err error
		if info, err = json.Marshal(deadEntry{Flow: l.Task.Flow, Reason: reason, Attempts: attempts}); err != nil {
			return fmt.Errorf("redisbackend: bury task %s: %w", id, err)
		}
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	res, err := b.onLeaseAlso(ctx, "bury", buryScript, l,
		[]string{b.streamKey(), b.leasesKey(), b.deadKey(), b.buriedKey()}, 0, also,
		group, id, string(info), strconv.FormatInt(time.Now().UnixMilli(), 10), strconv.FormatInt(b.retentionMS(), 10))
	if len(res) > 0 {
		b.noRunCounted(ctx, l, res[0])
	}
	return err
}

// Dead implements queue.Backend in one round trip.
func (b *Backend) Dead(ctx context.Context, limit int) ([]queue.DeadTask, error) {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	oldest := time.Now().Add(-b.cfg.Retention).UnixMilli()
	res, err := deadScript.exec(ctx, b.client, []string{b.deadKey(), b.buriedKey()},
		[]string{strconv.FormatInt(oldest, 10), strconv.Itoa(max(limit, 0))}).ToArray()
	if err != nil {
		return nil, b.wrap(ctx, "list dead tasks", err)
	}
	dead := make([]queue.DeadTask, 0, len(res))
	for _, r := range res {
		parts, err := r.AsStrSlice()
		if err != nil || len(parts) != 3 {
			return nil, fmt.Errorf("redisbackend: list dead tasks: malformed entry: %v", err)
		}
		ms, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisbackend: list dead tasks: time of %s: %w", parts[0], err)
		}
		d := queue.DeadTask{ID: parts[0], BuriedAt: time.UnixMilli(ms).UTC()}
		var e deadEntry
		if parts[2] != "" && json.Unmarshal([]byte(parts[2]), &e) == nil {
			d.Flow, d.Reason, d.Attempts = e.Flow, e.Reason, e.Attempts
		}
		dead = append(dead, d)
	}
	return dead, nil
}

// Requeue implements queue.Backend in two round trips: t's id goes to
// the queue's starting set and t's record is written (on a Cluster
// client, whose keys for the two are on different slots, in two round
// trips), then t's index entry (see index.go) and one script that takes
// deadID out of the dead-letter set, queues t and marks its start done,
// or finds deadID missing and queues nothing (then t's record is deleted
// again, its start forgotten and its index entry removed). A re-queue
// cut before the script (its process dies, Redis answers an error) leaves
// deadID in the dead-letter set, to be re-queued again, and t to the
// sweep of cut starts, which ends it as FAILURE (see starts.go).
func (b *Backend) Requeue(ctx context.Context, deadID string, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: re-queue: %w", queue.ErrInvalidID)
	}
	if !queue.ValidID(deadID) {
		return fmt.Errorf("redisbackend: re-queue: %w: %w", queue.ErrNotDead, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	now := time.Now()
	c := b.client
	op := "re-queue task " + deadID
	hset := c.B().Hset().Key(b.taskKey(t.ID)).FieldValue()
	for _, f := range recordFields(t) {
		hset = hset.FieldValue(f[0], f[1])
	}
	f, begin := b.beginStart(t, now)
	hset = hset.FieldValue(f[0], f[1])
	cmds := append(rueidis.Commands{hset.Build()}, b.expireAtLeast(t.ID, b.recordTTL(t, now))...)
	if b.cluster {
		if err := b.send(ctx, op, rueidis.Commands{begin}); err != nil {
			return err
		}
	} else {
		cmds = append(rueidis.Commands{begin}, cmds...) // run in order
	}
	if err := b.send(ctx, op, cmds); err != nil {
		return err
	}
	if err := b.cut(t); err != nil {
		return err
	}
	var due int64
	if !t.RunAt.IsZero() {
		due = t.RunAt.UnixMilli()
	}
	keys := []string{b.deadKey(), b.buriedKey(), b.streamKey(), b.delayedKey(), b.wakeKey(), b.startingKey()}
	if t.Limit.On() {
		keys = append(keys, b.gateKey(t.Flow))
	}
	// The new task's index entry goes ahead of the script, once its
	// record is written (see index.go): a re-queue cut in between is
	// swept.
	kind := waitNever
	if b.durable() {
		kind = waitFor[requeueScript]
	}
	index := b.indexCommands([]indexEntry{createdEntry(t, now)})
	indexed, reply, _ := b.runScriptAfter(ctx, index, requeueScript, kind, keys,
		[]string{deadID, strconv.FormatInt(now.Add(-b.cfg.Retention).UnixMilli(), 10), t.ID,
			strconv.FormatInt(due, 10), strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(maxBlock.Milliseconds(), 10),
			strconv.FormatInt(doneScore, 10)},
		nil)
	b.indexErrors(indexed)
	n, err := reply.AsInt64()
	if err == nil && n == 0 {
		// The start is forgotten once the record is gone, not before: a
		// record left would be ended by a sweep. Its index entry goes
		// with it.
		err := b.send(ctx, "re-queue task "+deadID, b.deleteTask(t.ID))
		if err == nil {
			err = b.send(ctx, "re-queue task "+deadID, rueidis.Commands{b.forgetStart(t),
				c.B().Zrem().Key(b.indexKey()).Member(t.ID).Build(), c.B().Zrem().Key(b.flowIndexKey(t.Flow)).Member(t.ID).Build()})
		}
		if err != nil {
			b.log.Warn("flows: could not delete the record of a task not re-queued", "task_id", t.ID, "err", err)
		}
		return fmt.Errorf("redisbackend: re-queue task %s: %w", deadID, queue.ErrNotDead)
	}
	if err == nil && t.Limit.On() {
		return b.admitNew(ctx, t)
	}
	return b.wrap(ctx, op, err)
}
