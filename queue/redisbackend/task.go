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

// Task record hash fields.
const (
	recID          = "id"
	recFlow        = "flow"
	recInputs      = "inputs"
	recAttempt     = "attempt"
	recMaxAttempts = "max_attempts"
	recTimeout     = "timeout"
	recEnqueuedAt  = "enqueued_at"
	recRunAt       = "run_at"
	recCancelled   = "cancelled"
)

// streamField is the field of a queue stream entry that holds the task id.
const streamField = "task"

// Enqueue implements queue.Backend in one round trip: the task record, its
// expiry and the stream entry (or, for a task due later, the delayed-set
// member) are sent together.
func (b *Backend) Enqueue(ctx context.Context, t *queue.Task) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	now := time.Now()
	ttl := b.cfg.Retention
	delayed := t.RunAt.After(now)
	if delayed {
		ttl += t.RunAt.Sub(now)
	}
	c := b.client
	hset := c.B().Hset().Key(b.taskKey(t.ID)).FieldValue()
	for _, f := range recordFields(t) {
		hset = hset.FieldValue(f[0], f[1])
	}
	cmds := rueidis.Commands{
		hset.Build(),
		c.B().Pexpire().Key(b.taskKey(t.ID)).Milliseconds(ttl.Milliseconds()).Build(),
	}
	if delayed {
		cmds = append(cmds,
			c.B().Zadd().Key(b.delayedKey()).ScoreMember().ScoreMember(float64(t.RunAt.UnixMilli()), t.ID).Build(),
			// The progress snapshot must outlive the wait too.
			c.B().Pexpire().Key(b.snapKey(t.ID)).Milliseconds(ttl.Milliseconds()).Gt().Build(),
		)
	} else {
		cmds = append(cmds, c.B().Xadd().Key(b.streamKey()).Id("*").FieldValue().FieldValue(streamField, t.ID).Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return wrap("enqueue task "+t.ID, err)
		}
	}
	return nil
}

// recordFields returns the hash fields of t's record, as field-value
// pairs.
func recordFields(t *queue.Task) [][2]string {
	var runAt int64
	if !t.RunAt.IsZero() {
		runAt = t.RunAt.UnixNano()
	}
	fields := [][2]string{
		{recID, t.ID},
		{recFlow, t.Flow},
		{recInputs, string(t.Inputs)},
		{recAttempt, strconv.Itoa(t.Attempt)},
		{recMaxAttempts, strconv.Itoa(t.MaxAttempts)},
		{recTimeout, strconv.FormatInt(int64(t.Timeout), 10)},
		{recEnqueuedAt, strconv.FormatInt(t.EnqueuedAt.UnixNano(), 10)},
		{recRunAt, strconv.FormatInt(runAt, 10)},
	}
	if t.Cancelled {
		fields = append(fields, [2]string{recCancelled, "1"})
	}
	return fields
}

// decodeRecord turns a task record back into a Task. ok is false for a
// record without a flow: what HINCRBY leaves of a task that expired.
func decodeRecord(fields map[string]string) (t *queue.Task, ok bool, err error) {
	if fields[recFlow] == "" {
		return nil, false, nil
	}
	t = &queue.Task{
		ID:        fields[recID],
		Flow:      fields[recFlow],
		Cancelled: fields[recCancelled] == "1",
	}
	if in := fields[recInputs]; in != "" {
		t.Inputs = json.RawMessage(in)
	}
	ints := []struct {
		field string
		dst   *int64
	}{
		{recAttempt, new(int64)},
		{recMaxAttempts, new(int64)},
		{recTimeout, new(int64)},
		{recEnqueuedAt, new(int64)},
		{recRunAt, new(int64)},
	}
	for _, f := range ints {
		if s := fields[f.field]; s != "" {
			if *f.dst, err = strconv.ParseInt(s, 10, 64); err != nil {
				return nil, false, fmt.Errorf("field %s: %w", f.field, err)
			}
		}
	}
	t.Attempt = int(*ints[0].dst)
	t.MaxAttempts = int(*ints[1].dst)
	t.Timeout = time.Duration(*ints[2].dst)
	t.EnqueuedAt = time.Unix(0, *ints[3].dst).UTC()
	if n := *ints[4].dst; n != 0 {
		t.RunAt = time.Unix(0, n).UTC()
	}
	return t, true, nil
}

// Get implements queue.Backend.
func (b *Backend) Get(ctx context.Context, id string) (*queue.Task, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("%w: %w", queue.ErrNotFound, queue.ErrInvalidID)
	}
	fields, err := b.client.Do(ctx, b.client.B().Hgetall().Key(b.taskKey(id)).Build()).AsStrMap()
	if err != nil {
		return nil, wrap("get task "+id, err)
	}
	t, ok, err := decodeRecord(fields)
	if err != nil {
		return nil, fmt.Errorf("redisbackend: decode task %q: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	return t, nil
}
