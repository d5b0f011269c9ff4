package redisbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

var _ progress.CheckpointStore = (*Backend)(nil)

// checkpointsKey is the hash of a task's checkpoints: key -> value, the
// attempt that saved it, a space and the output's JSON.
func (b *Backend) checkpointsKey(id string) string { return b.cfg.Prefix + ":{" + id + "}:checkpoints" }

// checkpointCall is one SaveCheckpoint call's share of checkpointScript.
type checkpointCall struct {
	taskID, key, value string
}

// checkpointWeight is a call's weight in a batch: two script arguments,
// and one more per 16 KiB of output, so that a batch of large outputs
// stays a few megabytes.
func checkpointWeight(c checkpointCall) int { return 2 + len(c.value)>>14 }

// SaveCheckpoint implements progress.CheckpointStore in one round trip,
// which concurrent SaveCheckpoints (of any tasks) share (see batcher):
// one script that checks each task's state and records its checkpoint
// (see lua/checkpoint.lua). A lone call sends Redis the output and about
// 400 bytes more (the command, four key names, the checkpoint's key), and
// Redis keeps the key and the output with a few bytes of framing.
func (b *Backend) SaveCheckpoint(ctx context.Context, taskID string, c progress.Checkpoint) error {
	if !queue.ValidID(taskID) {
		return fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("redisbackend: save checkpoint of task %q: %w", taskID, err)
	}
	value := make([]byte, 0, 8+len(c.Output))
	value = strconv.AppendInt(value, int64(c.Attempt), 10)
	value = append(value, ' ')
	value = append(value, c.Output...)
	_, err := b.checkpoints.do(ctx, checkpointCall{taskID: taskID, key: c.Key, value: string(value)})
	switch replyCode(err) {
	case "NOTFOUND":
		return fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	case "FINISHED":
		return fmt.Errorf("%w: task %q: checkpoint %q not recorded", progress.ErrFinished, taskID, c.Key)
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("redisbackend: save checkpoint of task %q: %w", taskID, err)
	}
	return err
}

// runCheckpoints runs a batch of SaveCheckpoint calls in one
// checkpointScript.
func (b *Backend) runCheckpoints(ctx context.Context, calls []*batchCall[checkpointCall, struct{}]) {
	keys := make([]string, 0, 4*len(calls))
	for _, c := range calls {
		id := c.item.taskID
		keys = append(keys, b.taskKey(id), b.stepsKey(id), b.eventsKey(id), b.checkpointsKey(id))
	}
	args := batchArgs([]string{strconv.FormatInt(b.retentionMS(), 10), strconv.Itoa(len(calls))},
		calls, func(c *batchCall[checkpointCall, struct{}]) []string { return []string{c.item.key, c.item.value} })
	replies, err := batchReplies(checkpointScript.exec(ctx, b.client, keys, args), len(calls))
	for i, c := range calls {
		if err != nil {
			c.err = b.wrap(ctx, "save checkpoint of task "+c.item.taskID, err)
			continue
		}
		// A coded error (NOTFOUND, FINISHED) as it is, for SaveCheckpoint.
		if c.err = replies[i].Error(); c.err != nil && replyCode(c.err) == "" {
			c.err = fmt.Errorf("redisbackend: save checkpoint of task %q: %w", c.item.taskID, c.err)
		}
	}
}

// Checkpoints implements progress.CheckpointStore in one round trip: the
// task's state, to tell an unknown task, and its checkpoints hash.
func (b *Backend) Checkpoints(ctx context.Context, taskID string) (map[string]progress.Checkpoint, error) {
	if !queue.ValidID(taskID) {
		return nil, fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	res := c.DoMulti(ctx,
		c.B().Hget().Key(b.taskKey(taskID)).Field(fieldState).Build(),
		c.B().Hgetall().Key(b.checkpointsKey(taskID)).Build(),
	)
	if _, err := res[0].ToString(); rueidis.IsRedisNil(err) {
		return nil, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	} else if err != nil {
		return nil, b.wrap(ctx, "read checkpoints of task "+taskID, err)
	}
	fields, err := res[1].AsStrMap()
	if err != nil {
		return nil, b.wrap(ctx, "read checkpoints of task "+taskID, err)
	}
	out := make(map[string]progress.Checkpoint, len(fields))
	for key, value := range fields {
		cp, err := decodeCheckpoint(key, value)
		if err != nil {
			return nil, fmt.Errorf("redisbackend: read checkpoints of task %q: %w", taskID, err)
		}
		out[key] = cp
	}
	return out, nil
}

// decodeCheckpoint decodes the value a checkpoints hash holds for key.
func decodeCheckpoint(key, value string) (progress.Checkpoint, error) {
	attempt, output, ok := strings.Cut(value, " ")
	n, err := strconv.Atoi(attempt)
	if !ok || err != nil || n < 1 || !json.Valid([]byte(output)) {
		return progress.Checkpoint{}, fmt.Errorf("malformed checkpoint %q", key)
	}
	return progress.Checkpoint{Key: key, Attempt: n, Output: json.RawMessage(output)}, nil
}
