package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flowsrun/flows/internal/opctx"
	"github.com/flowsrun/flows/progress"
)

// ErrIdempotencyConflict: Enqueue was given an idempotency key already
// used, within the backend's retention, for a task of another flow or
// with other inputs. Nothing was enqueued. The HTTP layer answers it with
// 422.
var ErrIdempotencyConflict = errors.New("queue: idempotency key already used with another flow or other inputs")

// IdempotentID returns the id of the task that Enqueue with
// EnqueueOptions.IdempotencyKey key and EnqueueOptions.Owner owner
// creates: a hash of both, of the form of NewID. Deriving the id from the key is what makes the key's
// claim atomic: the progress store refuses to create a second task with
// that id as it refuses any id taken (progress.ErrExists), so no other
// record is needed. The id reveals
// nothing of the key, but whoever knows the key can compute it.
func IdempotentID(owner, key string) string {
	// The owner's length first: no two pairs make the same text.
	sum := sha256.Sum256([]byte("flows idempotency key\x00" + strconv.Itoa(len(owner)) + ":" + owner + key))
	return hex.EncodeToString(sum[:16])
}

// Bounds of the wait for the queue record of a task whose key was
// claimed by a concurrent Enqueue that has recorded its progress but not
// queued it yet (the two-step path of addOnce; see enqueuedBefore).
// claimWait is a variable for tests.
var claimWait = 5 * time.Second

const (
	claimMinPause = time.Millisecond
	claimMaxPause = 100 * time.Millisecond
)

// addOnce records the new task t, whose id comes from an idempotency key,
// as PENDING and enqueues it, unless a task has that id already (see
// enqueuedBefore). A backend that claims the id and queues the task in
// one atomic step does both at once (onceCreator: one round trip on
// Redis, batched with other creates). Otherwise it takes two steps: the
// store's Create claims the id, atomically, and only then is the task
// queued. (taskCreator's one step may queue a task before it finds the id
// taken, so it is not used here.)
func (b *Broker) addOnce(ctx context.Context, t *Task) (repeat bool, err error) {
	if b.once != nil {
		err := b.once.CreateAndEnqueueOnce(ctx, t)
		switch {
		case err == nil:
			return false, nil
		case errors.Is(err, progress.ErrExists):
			return b.enqueuedBefore(ctx, t)
		case !errors.Is(err, errors.ErrUnsupported):
			return false, fmt.Errorf("queue: enqueue task: %w", err)
		}
	}
	err = b.store.Create(ctx, t.ID)
	switch {
	case errors.Is(err, progress.ErrExists):
		return b.enqueuedBefore(ctx, t)
	case err != nil:
		return false, fmt.Errorf("queue: record task: %w", err)
	}
	if err := b.backend.Enqueue(ctx, t); err != nil {
		return false, fmt.Errorf("queue: enqueue task: %w", err)
	}
	return false, nil
}

// enqueuedBefore finishes an Enqueue with an idempotency key whose task,
// t.ID, exists already: it returns nil when that task has t's flow and
// inputs, and an error wrapping ErrIdempotencyConflict when not. It
// reports a repeat unless it queued t itself (below).
//
// A concurrent Enqueue may have recorded the progress and not queued the
// task yet: enqueuedBefore waits for its record, up to claimWait. If none
// comes (that Enqueue's process died in between), it queues t itself
// under the id, so that a key never stays held by a task that will not
// run. With a store that is not the backend, a backend whose starts
// record a task before they queue it (startChecker) may hold a record
// whose start is under way, or was cut before the queue entry, which a
// sweep of the backend cannot end in another store: such a record counts
// as none until its start is done.
func (b *Broker) enqueuedBefore(ctx context.Context, t *Task) (repeat bool, err error) {
	deadline := time.Now().Add(claimWait)
	pause := claimMinPause
	for {
		got, err := b.backend.Get(ctx, t.ID)
		switch {
		case err == nil:
			if got.Flow != t.Flow || !sameJSON(got.Inputs, t.Inputs) {
				return false, ErrIdempotencyConflict
			}
			done, err := b.startDone(ctx, t.ID)
			if err != nil {
				return false, fmt.Errorf("queue: read the start of the task of an idempotency key: %w", err)
			}
			if done {
				return true, nil
			}
		case !errors.Is(err, ErrNotFound):
			return false, fmt.Errorf("queue: read the task of an idempotency key: %w", err)
		}
		if time.Now().After(deadline) {
			if err := b.backend.Enqueue(ctx, t); err != nil {
				return false, fmt.Errorf("queue: enqueue task %s, whose progress was recorded but which was not queued: %w", t.ID, err)
			}
			b.cfg.Logger.Warn("flows: queued a task whose idempotency key was claimed by an enqueue that did not finish",
				"task_id", t.ID, "flow", t.Flow, "waited", claimWait)
			return false, nil
		}
		if !opctx.Sleep(ctx, pause) {
			return false, ctx.Err()
		}
		pause = min(2*pause, claimMaxPause)
	}
}

// startDone reports whether the start that recorded task id is done (see
// startChecker): always, unless the store is not the backend and the
// backend tells.
func (b *Broker) startDone(ctx context.Context, id string) (bool, error) {
	if b.starts == nil {
		return true, nil
	}
	return b.starts.StartDone(ctx, id)
}

// sameJSON reports whether a and b are the same JSON text but for
// insignificant whitespace.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
