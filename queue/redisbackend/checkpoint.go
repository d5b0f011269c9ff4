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

// SaveCheckpoint implements progress.CheckpointStore in one round trip:
// one script that checks the task's state and records c (see
// lua/checkpoint.lua). Redis receives the output and about 400 bytes
// more (the command, four key names, the checkpoint's key), and keeps
// the key and the output with a few bytes of framing.
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
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	err := checkpointScript.exec(ctx, b.client,
		[]string{b.taskKey(taskID), b.stepsKey(taskID), b.eventsKey(taskID), b.checkpointsKey(taskID)},
		[]string{strconv.FormatInt(b.retentionMS(), 10), c.Key, string(value)},
	).Error()
	switch replyCode(err) {
	case "NOTFOUND":
		return fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	case "FINISHED":
		return fmt.Errorf("%w: task %q: checkpoint %q not recorded", progress.ErrFinished, taskID, c.Key)
	}
	return b.wrap(ctx, "save checkpoint of task "+taskID, err)
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
