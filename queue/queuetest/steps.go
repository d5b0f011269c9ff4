package queuetest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// registerResearch registers the flow research: a step "search", counted
// in search, then a step "answer", counted in answer, that fails with
// fail(its count) when that is not nil.
func registerResearch(h *harness, search, answer *atomic.Int32, fail func(n int32) error) {
	h.reg.MustRegister("research", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		hits, err := flow.Step(ctx, ft, "search", func(context.Context) ([]string, error) {
			search.Add(1)
			return []string{"hit 1", "hit 2"}, nil
		})
		if err != nil {
			return nil, err
		}
		return flow.Step(ctx, ft, "answer", func(context.Context) (string, error) {
			if err := fail(answer.Add(1)); err != nil {
				return "", err
			}
			return strings.Join(hits, " and "), nil
		})
	}))
}

// runSteps checks that a Worker hands its flows the checkpoints of their
// task, so that flow.Step replays, on a later attempt, the steps an
// earlier one completed. A progress store that keeps no checkpoints (not
// a progress.CheckpointStore) runs every step on every attempt.
func runSteps(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("RetryReplaysCompletedSteps", func(t *testing.T) {
		h := newHarness(t, newBackends)
		_, keeps := h.store.(progress.CheckpointStore)
		var search, answer atomic.Int32
		registerResearch(h, &search, &answer, func(n int32) error {
			if n == 1 {
				return errors.New("model overloaded")
			}
			return nil
		})
		h.start(queue.WorkerConfig{})
		id := h.enqueue("research", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"hit 1 and hit 2"`, string(snap.Details.FinalResult))
		assert.Equal(t, int32(2), answer.Load(), "the failed step ran again")
		msgs := stepMessages(snap)
		require.NotEmpty(t, msgs)
		assert.True(t, strings.HasPrefix(msgs[0], "attempt 1 failed: model overloaded; retrying in "), msgs[0])
		if !keeps {
			assert.Equal(t, int32(2), search.Load(), "no checkpoints kept: every step runs again")
			return
		}
		assert.Equal(t, int32(1), search.Load(), "the completed step ran once")
		assert.Equal(t, []string{msgs[0], "attempt 2 of 3 starts: attempt 1 failed", "search: replayed from attempt 1"}, msgs)
	})

	t.Run("WorkerLostReplaysCompletedSteps", func(t *testing.T) {
		h := newHarness(t, newBackends)
		cps, keeps := h.store.(progress.CheckpointStore)
		if !keeps {
			t.Skip("the progress store keeps no checkpoints") // RetryReplaysCompletedSteps covered it
		}
		var runs attempts
		var paid atomic.Int32
		h.reg.MustRegister("paid", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			return flow.Step(ctx, ft, "call the model", func(context.Context) (string, error) {
				paid.Add(1)
				return "a fresh answer", nil
			})
		}))
		id := h.enqueue("paid", "", queue.EnqueueOptions{MaxAttempts: 3})
		// A worker leases the task, runs its step, records it, and dies
		// before the task ends.
		lost := fetchOne(t, h.backend, 50*time.Millisecond)
		require.Equal(t, id, lost.Task.ID)
		ctx := context.Background()
		_, err := h.store.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"})
		require.NoError(t, err)
		dead := &flow.Task{ID: id, Flow: "paid", Attempt: lost.Task.Attempt, Progress: progress.Discard,
			Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{Store: cps, TaskID: id, Attempt: lost.Task.Attempt, Logger: quiet})}
		_, err = flow.Step(ctx, dead, "call the model", func(context.Context) (string, error) { return "the first answer", nil })
		require.NoError(t, err)

		h.start(queue.WorkerConfig{Concurrency: 1})
		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"the first answer"`, string(snap.Details.FinalResult), "the lost run's output, replayed")
		assert.Zero(t, paid.Load(), "the step did not run again")
		assert.Equal(t, []int{2}, runs.get())
		assert.Equal(t, []string{
			"attempt 2 of 3 starts: attempt 1 timed out: its lease expired",
			"call the model: replayed from attempt 1",
		}, stepMessages(snap))
	})

	t.Run("RequeueResumeReplaysDeadTaskSteps", func(t *testing.T) {
		h := newHarness(t, newBackends)
		cps, keeps := h.store.(progress.CheckpointStore)
		if !keeps {
			t.Skip("the progress store keeps no checkpoints")
		}
		ctx := context.Background()
		var search, answer atomic.Int32
		var down atomic.Bool
		down.Store(true)
		registerResearch(h, &search, &answer, func(n int32) error {
			switch {
			case down.Load():
				return flow.Permanent(errors.New("model provider down"))
			case n == 3:
				return errors.New("model overloaded") // the resumed task's first attempt
			}
			return nil
		})
		h.start(queue.WorkerConfig{})
		dead := h.enqueue("research", "", queue.EnqueueOptions{MaxAttempts: 2})
		require.Equal(t, progress.StateFailure, h.waitTerminal(dead).State)
		h.waitBuried(dead)
		plainDead := h.enqueue("research", "", queue.EnqueueOptions{MaxAttempts: 2})
		require.Equal(t, progress.StateFailure, h.waitTerminal(plainDead).State)
		h.waitBuried(plainDead)
		require.Equal(t, int32(2), search.Load())
		require.Equal(t, int32(2), answer.Load())

		down.Store(false) // the provider is back
		again, err := h.broker.RequeueWith(ctx, dead, queue.RequeueOptions{Resume: true})
		require.NoError(t, err)
		snap := h.waitTerminal(again)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"hit 1 and hit 2"`, string(snap.Details.FinalResult))
		assert.Equal(t, int32(2), search.Load(), "the dead task's completed step did not run again")
		assert.Equal(t, int32(4), answer.Load(), "the failed step ran, and again after its retry")
		msgs := stepMessages(snap)
		require.Len(t, msgs, 5, "%q", msgs)
		assert.Equal(t, "re-queued from task "+dead+", resuming its completed steps", msgs[0])
		assert.Equal(t, "search: replayed from task "+dead, msgs[1])
		assert.True(t, strings.HasPrefix(msgs[2], "attempt 1 failed: model overloaded; retrying in "), msgs[2])
		assert.Equal(t, []string{"attempt 2 of 2 starts: attempt 1 failed", "search: replayed from attempt 1"}, msgs[3:],
			"the replayed step was recorded as the new task's own")
		info, err := h.broker.Task(ctx, again)
		require.NoError(t, err)
		require.NotNil(t, info.Task)
		assert.Equal(t, dead, info.Task.RequeuedFrom)
		assert.True(t, info.Task.Resume)
		own, err := cps.Checkpoints(ctx, again)
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"search", "answer"}, slices.Collect(maps.Keys(own)))
		old, err := cps.Checkpoints(ctx, dead)
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"search"}, slices.Collect(maps.Keys(old)), "the dead task's checkpoints are left as they were")

		plain, err := h.broker.RequeueWith(ctx, plainDead, queue.RequeueOptions{})
		require.NoError(t, err)
		snap = h.waitTerminal(plain)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, int32(3), search.Load(), "a plain re-queue runs every step again")
		assert.Equal(t, []string{"re-queued from task " + plainDead}, stepMessages(snap))
	})

	t.Run("RequeueResumeOfTaskWithoutCheckpoints", func(t *testing.T) {
		h := newHarness(t, newBackends)
		if _, keeps := h.store.(progress.CheckpointStore); !keeps {
			t.Skip("the progress store keeps no checkpoints")
		}
		ctx := context.Background()
		var fixed atomic.Bool
		h.reg.MustRegister("fragile", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			if !fixed.Load() {
				return nil, flow.Permanent(errors.New("bad key"))
			}
			return flow.Step(ctx, ft, "search", func(context.Context) (string, error) { return "found", nil })
		}))
		h.start(queue.WorkerConfig{})
		dead := h.enqueue("fragile", "", queue.EnqueueOptions{MaxAttempts: 1})
		require.Equal(t, progress.StateFailure, h.waitTerminal(dead).State)
		h.waitBuried(dead)
		fixed.Store(true)
		again, err := h.broker.RequeueWith(ctx, dead, queue.RequeueOptions{Resume: true})
		require.NoError(t, err)
		snap := h.waitTerminal(again)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, []string{
			"re-queued from task " + dead + ", resuming its completed steps",
			"resuming nothing: task " + dead + " has no checkpoints (it recorded none, or they have expired)",
		}, stepMessages(snap))
	})
}
