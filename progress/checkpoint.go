package progress

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
)

// Checkpoint is the recorded output of one completed step of a task (see
// flow.Step): a later attempt of the task returns Output instead of
// running the step again.
type Checkpoint struct {
	// Key names the step within its task: the name given to flow.Step,
	// or a key made by a library such as flow/lcflow.
	Key string `json:"key"`
	// Attempt is the attempt of the task (flow.Task.Attempt) that ran the
	// step and recorded it.
	Attempt int `json:"attempt"`
	// Output is the step's output as JSON.
	Output json.RawMessage `json:"output"`
}

// Validate checks that c can be recorded: a key of 1 to MaxCheckpointKeyLen
// bytes, an attempt of at least 1, and an output that is valid JSON.
func (c Checkpoint) Validate() error {
	switch {
	case c.Key == "" || len(c.Key) > MaxCheckpointKeyLen:
		return fmt.Errorf("%w: key of %d bytes (want 1 to %d)", ErrInvalidCheckpoint, len(c.Key), MaxCheckpointKeyLen)
	case c.Attempt < 1:
		return fmt.Errorf("%w: %q: attempt %d (want 1 or more)", ErrInvalidCheckpoint, c.Key, c.Attempt)
	case !json.Valid(c.Output):
		return fmt.Errorf("%w: %q: output is not valid JSON", ErrInvalidCheckpoint, c.Key)
	}
	return nil
}

// MaxCheckpointKeyLen bounds the length of a checkpoint's key, in bytes.
const MaxCheckpointKeyLen = 512

// CheckpointStore keeps the checkpoints of each task: the outputs of the
// steps its attempts completed, so that a later attempt (a retry, or a
// run after its worker died) replays them instead of running them again.
// A worker hands it to the flows it runs (see flow.Step and
// queue.WorkerConfig.Checkpoints). MemoryStore and the Redis backend
// implement it; progresstest.RunCheckpoints is its conformance suite.
//
// Implementations must be safe for concurrent use. Checkpoints belong to
// their task: they are kept while the task is, for at least the store's
// retention after they were saved, and go with it.
type CheckpointStore interface {
	// SaveCheckpoint records c for the task, replacing a checkpoint with
	// the same key. It fails with ErrInvalidCheckpoint for a checkpoint
	// that does not Validate, ErrNotFound for an unknown task, and
	// ErrFinished once the task has reached SUCCESS or FAILURE (a late
	// step of an abandoned run records nothing); in each case nothing is
	// recorded.
	SaveCheckpoint(ctx context.Context, taskID string, c Checkpoint) error

	// Checkpoints returns the task's checkpoints by key (an empty map
	// when it has none), or ErrNotFound for an unknown task.
	Checkpoints(ctx context.Context, taskID string) (map[string]Checkpoint, error)
}

// SaveCheckpoint implements CheckpointStore. Saving counts as an update of
// the task: its retention starts again.
func (s *MemoryStore) SaveCheckpoint(ctx context.Context, taskID string, c Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("progress: save checkpoint of task %q: %w", taskID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return err
	}
	if t.snap.State.Terminal() {
		return fmt.Errorf("%w: task %q: checkpoint %q not recorded", ErrFinished, taskID, c.Key)
	}
	if t.checkpoints == nil {
		t.checkpoints = map[string]Checkpoint{}
	}
	c.Output = cloneRaw(c.Output)
	t.checkpoints[c.Key] = c
	s.touchLocked(t, s.now())
	return nil
}

// Checkpoints implements CheckpointStore.
func (s *MemoryStore) Checkpoints(ctx context.Context, taskID string) (map[string]Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return nil, err
	}
	out := maps.Clone(t.checkpoints)
	if out == nil {
		return map[string]Checkpoint{}, nil
	}
	for k, c := range out {
		c.Output = cloneRaw(c.Output)
		out[k] = c
	}
	return out, nil
}
