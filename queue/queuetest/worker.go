package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// seen records values in the order they were seen, from any goroutine.
type seen[T any] struct {
	mu   sync.Mutex
	list []T
}

func (s *seen[T]) add(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, v)
}

func (s *seen[T]) get() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]T(nil), s.list...)
}

// attempts records the attempt numbers a flow was run with.
type attempts = seen[int]

// waitFor waits for ch to be closed or to yield a value.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(long):
		require.FailNow(t, "timed out waiting: "+what)
	}
	var zero T
	return zero
}

// runWorker runs tasks end to end through a Broker and Workers.
func runWorker(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("Success", func(t *testing.T) {
		h := newHarness(t, newBackends)
		got := make(chan flow.Task, 1)
		h.reg.MustRegister("poem", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			got <- *ft
			ft.Progress.Progress(40, "writing")
			ft.Progress.Log("wrote the first verse")
			ft.Progress.ToolResult("research", "search", map[string]int{"hits": 2})
			return map[string]string{"poem": "roses are red"}, nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("poem", `{"topic":"roses"}`, queue.EnqueueOptions{})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `{"poem":"roses are red"}`, string(snap.Details.FinalResult))
		assert.Equal(t, 100, snap.Details.Progress)
		require.Len(t, snap.Details.StepResults, 2)
		first := snap.Details.StepResults[0]
		assert.False(t, first.At.IsZero(), "a step result has its time")
		first.At = time.Time{}
		assert.Equal(t, progress.StepResult{Type: progress.StepLog, Message: "wrote the first verse"}, first)
		tool := snap.Details.StepResults[1]
		assert.Equal(t, progress.StepToolResult, tool.Type)
		assert.Equal(t, "research", tool.StepName)
		assert.Equal(t, "search", tool.Tool)
		assert.JSONEq(t, `{"hits":2}`, string(tool.Data))

		ft := waitFor(t, got, "flow run")
		assert.Equal(t, id, ft.ID)
		assert.Equal(t, "poem", ft.Flow)
		assert.Equal(t, 1, ft.Attempt)
		assert.JSONEq(t, `{"topic":"roses"}`, string(ft.Inputs))
		assert.NotNil(t, ft.Progress)
	})

	t.Run("RetriesThenFailure", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs, backoffs attempts
		h.reg.MustRegister("flaky", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			return nil, errors.New("model overloaded")
		}))
		h.start(queue.WorkerConfig{Backoff: func(n int) time.Duration {
			backoffs.add(n)
			return time.Millisecond
		}})
		id := h.enqueue("flaky", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "failed after 3 attempts: model overloaded", snap.Details.Status)
		assert.Equal(t, []int{1, 2, 3}, runs.get(), "attempts seen by the flow")
		assert.Equal(t, []int{1, 2}, backoffs.get(), "Backoff is asked after each failed attempt but the last")
		msgs := stepMessages(snap)
		require.Len(t, msgs, 4, "per retry, a log step that announces it and one that starts the next attempt: %q", msgs)
		assert.True(t, strings.HasPrefix(msgs[0], "attempt 1 failed: model overloaded; retrying in "), msgs[0])
		assert.Equal(t, "attempt 2 of 3 starts: attempt 1 failed", msgs[1])
		assert.True(t, strings.HasPrefix(msgs[2], "attempt 2 failed: model overloaded; retrying in "), msgs[2])
		assert.Equal(t, "attempt 3 of 3 starts: attempt 2 failed", msgs[3])

		dead := h.waitBuried(id)
		assert.Equal(t, "flaky", dead.Flow)
		assert.Equal(t, snap.Details.Status, dead.Reason, "the reason is the FAILURE's status")
		assert.Equal(t, 3, dead.Attempts)
	})

	t.Run("RetryThenSuccess", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs attempts
		h.reg.MustRegister("flaky", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			if ft.Attempt == 1 {
				return nil, errors.New("rate limited")
			}
			return fmt.Sprintf("ok on attempt %d", ft.Attempt), nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("flaky", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"ok on attempt 2"`, string(snap.Details.FinalResult))
		assert.Equal(t, []int{1, 2}, runs.get())
		msgs := stepMessages(snap)
		require.Len(t, msgs, 2)
		assert.True(t, strings.HasPrefix(msgs[0], "attempt 1 failed: rate limited; retrying in "), msgs[0])
		assert.Equal(t, "attempt 2 of 3 starts: attempt 1 failed", msgs[1])
	})

	t.Run("ErrorsNotRetried", func(t *testing.T) {
		type nameInput struct {
			Name string `json:"name"`
		}
		for _, tc := range []struct {
			name       string
			flow       func(runs *attempts) flow.Flow
			inputs     string
			wantStatus string
			wantRuns   int
			// unchecked: the Broker would refuse the task; it comes
			// from a process whose flow took other inputs.
			unchecked bool
		}{
			{
				name: "permanent",
				flow: func(runs *attempts) flow.Flow {
					return flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
						runs.add(ft.Attempt)
						return nil, flow.Permanent(errors.New("search API refused the key"))
					})
				},
				wantStatus: "search API refused the key",
				wantRuns:   1,
			},
			{
				name: "invalid inputs",
				flow: func(runs *attempts) flow.Flow {
					return flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
						runs.add(ft.Attempt)
						return nil, fmt.Errorf("question: %w", flow.ErrInvalidInputs)
					})
				},
				wantStatus: "question: invalid inputs",
				wantRuns:   1,
			},
			{
				name: "typed flow given bad inputs",
				flow: func(runs *attempts) flow.Flow {
					return flow.Typed(func(ctx context.Context, in nameInput, ft *flow.Task) (string, error) {
						runs.add(ft.Attempt)
						return "hello " + in.Name, nil
					})
				},
				inputs:     `{}`,
				wantStatus: `invalid inputs: field "name": is required`,
				wantRuns:   0,
				unchecked:  true,
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				var runs attempts
				h.reg.MustRegister("doomed", tc.flow(&runs))
				h.start(queue.WorkerConfig{})
				var id string
				if tc.unchecked {
					id = h.enqueueUnchecked("doomed", tc.inputs)
				} else {
					id = h.enqueue("doomed", tc.inputs, queue.EnqueueOptions{MaxAttempts: 3})
				}

				snap := h.waitTerminal(id)
				assert.Equal(t, progress.StateFailure, snap.State)
				assert.Equal(t, tc.wantStatus, snap.Details.Status)
				assert.Len(t, runs.get(), tc.wantRuns, "runs of the flow")
				assert.Empty(t, stepMessages(snap), "no retry announced")
				dead := h.waitBuried(id)
				assert.Equal(t, tc.wantStatus, dead.Reason)
				assert.Equal(t, 1, dead.Attempts)
			})
		}
	})

	t.Run("PanicFailsTaskNotWorker", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs attempts
		h.reg.MustRegister("panics", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			panic("kaboom")
		}))
		h.reg.MustRegister("after", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			return "still alive", nil
		}))
		h.start(queue.WorkerConfig{Concurrency: 1})
		bad := h.enqueue("panics", "", queue.EnqueueOptions{MaxAttempts: 3})
		good := h.enqueue("after", "", queue.EnqueueOptions{})

		snap := h.waitTerminal(bad)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "panic: kaboom", snap.Details.Status)
		assert.Equal(t, []int{1}, runs.get(), "a panic is not retried")

		snap = h.waitTerminal(good)
		assert.Equal(t, progress.StateSuccess, snap.State, "the worker runs the next task")
		assert.JSONEq(t, `"still alive"`, string(snap.Details.FinalResult))
		assert.Equal(t, "panic: kaboom", h.waitBuried(bad).Reason)
		h.requireNotBuried(good)
	})

	t.Run("UnknownFlow", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.start(queue.WorkerConfig{})
		id := h.enqueueUnchecked("no-such-flow", "")
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Contains(t, snap.Details.Status, "unknown flow")
		assert.Contains(t, snap.Details.Status, "no-such-flow")
		dead := h.waitBuried(id)
		assert.Equal(t, "no-such-flow", dead.Flow)
		assert.Equal(t, snap.Details.Status, dead.Reason, "buried: a deploy that adds the flow can re-queue it")
	})

	t.Run("WorkerLost", func(t *testing.T) {
		for _, tc := range []struct {
			name        string
			maxAttempts int
			wantState   progress.State
			wantStatus  string
			wantRuns    []int
		}{
			{"run again with the next attempt", 3, progress.StateSuccess, "Completed", []int{2}},
			{"gave up when attempts are spent", 1, progress.StateFailure, "gave up after 1 attempt: lease expired", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				var runs attempts
				h.reg.MustRegister("fragile", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					runs.add(ft.Attempt)
					return ft.Attempt, nil
				}))
				id := h.enqueue("fragile", "", queue.EnqueueOptions{MaxAttempts: tc.maxAttempts})
				// A worker leases the task and dies without a word.
				lost := fetchOne(t, h.backend, 50*time.Millisecond)
				require.Equal(t, id, lost.Task.ID)

				h.start(queue.WorkerConfig{Concurrency: 1})
				snap := h.waitTerminal(id)
				assert.Equal(t, tc.wantState, snap.State)
				assert.Equal(t, tc.wantStatus, snap.Details.Status)
				assert.Equal(t, tc.wantRuns, runs.get())
				if tc.wantState == progress.StateFailure {
					dead := h.waitBuried(id)
					assert.Equal(t, tc.wantStatus, dead.Reason)
					assert.Equal(t, 1, dead.Attempts, "the lost run counts, the lease that buried it does not")
				} else {
					h.settle()
					h.requireNotBuried(id)
				}
			})
		}
	})

	t.Run("CancelPendingTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		ran := h.registerCounting("never")
		id := h.enqueue("never", "", queue.EnqueueOptions{})
		ctx := context.Background()
		require.NoError(t, h.broker.Cancel(ctx, id))

		snap := h.snapshot(id)
		assert.Equal(t, progress.StateFailure, snap.State, "a pending task ends at once")
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		assert.ErrorIs(t, h.broker.Cancel(ctx, id), queue.ErrFinished)

		// One slot: the worker is done with the cancelled task before it
		// fetches the marker queued behind it.
		h.start(queue.WorkerConfig{Concurrency: 1})
		h.settle()

		assert.Zero(t, ran.Load(), "the flow of a cancelled task never runs")
		snap = h.snapshot(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		requireOneTerminalEvent(t, h, id)
		h.requireNotBuried(id)
	})

	t.Run("EndedTaskIsNotRunAgain", func(t *testing.T) {
		// An earlier attempt recorded the end of each task, but its
		// worker died before acknowledging it: the tasks are leased
		// again, and must not run again.
		h := newHarness(t, newBackends)
		ran := h.registerCounting("once")
		ctx := context.Background()
		running := progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"}
		succeeded := h.enqueue("once", "", queue.EnqueueOptions{})
		_, err := h.store.Append(ctx, succeeded, running, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"first"`)})
		require.NoError(t, err)
		failed := h.enqueue("once", "", queue.EnqueueOptions{})
		_, err = h.store.Append(ctx, failed, running, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "boom"})
		require.NoError(t, err)

		h.start(queue.WorkerConfig{Concurrency: 1})
		h.settle()

		assert.Zero(t, ran.Load(), "the flow of an ended task never runs again")
		snap := h.snapshot(succeeded)
		assert.Equal(t, progress.StateSuccess, snap.State)
		assert.JSONEq(t, `"first"`, string(snap.Details.FinalResult))
		requireOneTerminalEvent(t, h, succeeded)
		h.requireNotBuried(succeeded)
		assert.Equal(t, "boom", h.waitBuried(failed).Reason, "a FAILURE not buried yet is buried")
		requireOneTerminalEvent(t, h, failed)
		requireNothingReady(t, h.backend)
	})

	t.Run("CancelRunningTask", func(t *testing.T) {
		h := newHarness(t, newBackends)
		started := make(chan struct{})
		sawCancel := make(chan error, 1)
		var runs attempts
		h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			close(started)
			<-ctx.Done()
			sawCancel <- ctx.Err()
			return nil, ctx.Err()
		}))
		h.start(queue.WorkerConfig{Concurrency: 1})
		id := h.enqueue("slow", "", queue.EnqueueOptions{MaxAttempts: 3})
		waitFor(t, started, "flow start")
		require.NoError(t, h.broker.Cancel(context.Background(), id))

		assert.ErrorIs(t, waitFor(t, sawCancel, "flow context cancelled"), context.Canceled)
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		assert.Equal(t, []int{1}, runs.get(), "a cancelled task is not retried")
		requireOneTerminalEvent(t, h, id)
		h.settle()
		h.requireNotBuried(id)
	})

	t.Run("CancelTaskWaitingToRetry", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs attempts
		h.reg.MustRegister("flaky", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			return nil, errors.New("upstream down")
		}))
		h.start(queue.WorkerConfig{Concurrency: 1, Backoff: func(int) time.Duration { return time.Hour }})
		id := h.enqueue("flaky", "", queue.EnqueueOptions{MaxAttempts: 3})
		eventually(t, func() bool { return len(stepMessages(h.snapshot(id))) == 1 }, "first attempt did not fail")

		require.NoError(t, h.broker.Cancel(context.Background(), id))
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		assert.Equal(t, []int{1}, runs.get())
		h.settle()
		h.requireNotBuried(id)
	})

	t.Run("CancelIgnoredByFlow", func(t *testing.T) {
		h := newHarness(t, newBackends)
		started := make(chan struct{})
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		h.reg.MustRegister("stubborn", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			close(started)
			<-release
			return "too late", nil
		}))
		h.reg.MustRegister("next", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			return "next", nil
		}))
		h.start(queue.WorkerConfig{Concurrency: 1, AbandonAfter: 50 * time.Millisecond})
		id := h.enqueue("stubborn", "", queue.EnqueueOptions{})
		waitFor(t, started, "flow start")
		require.NoError(t, h.broker.Cancel(context.Background(), id))

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		next := h.enqueue("next", "", queue.EnqueueOptions{})
		assert.Equal(t, progress.StateSuccess, h.waitTerminal(next).State, "the abandoned flow does not hold its slot")
		h.requireNotBuried(id)
	})

	t.Run("Timeout", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			ignores bool
		}{
			{"flow returns when its context ends", false},
			{"flow ignores its context", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				release := make(chan struct{})
				t.Cleanup(func() { close(release) })
				var runs attempts
				h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					runs.add(ft.Attempt)
					if tc.ignores {
						<-release
						return "late", nil
					}
					<-ctx.Done()
					return nil, ctx.Err()
				}))
				h.start(queue.WorkerConfig{AbandonAfter: 50 * time.Millisecond})
				id := h.enqueue("slow", "", queue.EnqueueOptions{Timeout: 50 * time.Millisecond, MaxAttempts: 3})

				snap := h.waitTerminal(id)
				assert.Equal(t, progress.StateFailure, snap.State)
				assert.Equal(t, "timed out after 50ms", snap.Details.Status)
				assert.Equal(t, []int{1}, runs.get(), "a timed-out task is not retried")
				assert.Equal(t, "timed out after 50ms", h.waitBuried(id).Reason)
			})
		}
	})

	t.Run("RequeueRunsDeadTaskAgain", func(t *testing.T) {
		h := newHarness(t, newBackends)
		ctx := context.Background()
		var fixed atomic.Bool
		var runs attempts
		h.reg.MustRegister("fragile", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			if !fixed.Load() {
				return nil, flow.Permanent(errors.New("search API refused the key"))
			}
			ft.Progress.Log("searched")
			return "found", nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("fragile", `{"q":"sky"}`, queue.EnqueueOptions{MaxAttempts: 2, Timeout: time.Minute, Owner: "user 7"})
		failed := h.waitTerminal(id)
		require.Equal(t, progress.StateFailure, failed.State)
		h.waitBuried(id)
		listed, err := h.broker.Dead(ctx, 10)
		require.NoError(t, err)
		require.Len(t, listed, 1)
		assert.Equal(t, id, listed[0].ID)

		fixed.Store(true) // the key was replaced
		again, err := h.broker.Requeue(ctx, id)
		require.NoError(t, err)
		assert.NotEqual(t, id, again, "a re-queued task gets a new id")
		assert.True(t, queue.ValidID(again))

		snap := h.waitTerminal(again)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"found"`, string(snap.Details.FinalResult))
		assert.Equal(t, []string{"re-queued from task " + id, "searched"}, stepMessages(snap),
			"the new task's log names the dead one first")
		assert.Equal(t, []int{1, 1}, runs.get(), "the new task starts from attempt 1")
		info, err := h.broker.Task(ctx, again)
		require.NoError(t, err)
		require.NotNil(t, info.Task)
		assert.Equal(t, id, info.Task.RequeuedFrom)
		assert.Equal(t, "fragile", info.Task.Flow)
		assert.JSONEq(t, `{"q":"sky"}`, string(info.Task.Inputs))
		assert.Equal(t, 2, info.Task.MaxAttempts)
		assert.Equal(t, time.Minute, info.Task.Timeout)
		assert.Equal(t, "user 7", info.Task.Owner, "the re-queued task keeps its owner")

		old := h.snapshot(id)
		assert.Equal(t, failed, old, "the dead task keeps its one terminal state")
		requireOneTerminalEvent(t, h, id)
		assert.Empty(t, fetchDead(t, h.backend), "the dead task left the dead-letter set")

		_, err = h.broker.Requeue(ctx, id)
		assert.ErrorIs(t, err, queue.ErrNotDead, "re-queued already")
		_, err = h.broker.Requeue(ctx, again)
		assert.ErrorIs(t, err, queue.ErrNotDead, "a task that succeeded")
		_, err = h.broker.Requeue(ctx, queue.NewID())
		assert.ErrorIs(t, err, queue.ErrNotFound)
		_, err = h.broker.Requeue(ctx, "not a valid id!")
		assert.ErrorIs(t, err, queue.ErrNotFound)
	})

	t.Run("ConcurrencyLimit", func(t *testing.T) {
		h := newHarness(t, newBackends)
		const limit, n = 3, 15
		var running, peak atomic.Int32
		h.reg.MustRegister("busy", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			now := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if now <= p || peak.CompareAndSwap(p, now) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			return nil, nil
		}))
		ids := make([]string, n)
		for i := range ids {
			ids[i] = h.enqueue("busy", "", queue.EnqueueOptions{})
		}
		h.start(queue.WorkerConfig{Concurrency: limit})
		for _, id := range ids {
			assert.Equal(t, progress.StateSuccess, h.waitTerminal(id).State)
		}
		assert.LessOrEqual(t, peak.Load(), int32(limit), "flows running at once")
		assert.Positive(t, peak.Load())
	})

	t.Run("GracefulShutdownLetsFlowFinish", func(t *testing.T) {
		h := newHarness(t, newBackends)
		base := h.goroutineBaseline()
		started := make(chan struct{})
		release := make(chan struct{})
		h.reg.MustRegister("finishing", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			close(started)
			select {
			case <-release:
				return "finished", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
		w := h.start(queue.WorkerConfig{ShutdownGrace: long})
		id := h.enqueue("finishing", "", queue.EnqueueOptions{})
		waitFor(t, started, "flow start")

		w.cancel()
		select {
		case err := <-w.done:
			require.FailNow(t, "Run returned while a flow was still running within the grace period", "err %v", err)
		case <-time.After(short):
		}
		close(release)
		w.wait()

		snap := h.snapshot(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "the flow's outcome is recorded before Run returns")
		assert.JSONEq(t, `"finished"`, string(snap.Details.FinalResult))
		requireGoroutinesSettle(t, base)
	})

	t.Run("ShutdownHandsBackUnfinishedTask", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			ignores bool
		}{
			{"flow returns when its context ends", false},
			{"flow ignores its context", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				base := h.goroutineBaseline()
				started := make(chan struct{})
				release := make(chan struct{})
				var runs attempts
				h.reg.MustRegister("handoff", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					runs.add(ft.Attempt)
					if ft.Attempt == 1 {
						close(started)
						if tc.ignores {
							<-release
						} else {
							<-ctx.Done()
						}
						return nil, errors.New("interrupted")
					}
					return map[string]int{"attempt": ft.Attempt}, nil
				}))
				first := h.start(queue.WorkerConfig{ShutdownGrace: 50 * time.Millisecond, AbandonAfter: 50 * time.Millisecond})
				id := h.enqueue("handoff", "", queue.EnqueueOptions{MaxAttempts: 3})
				waitFor(t, started, "flow start")
				first.stop()

				snap := h.snapshot(id)
				assert.Equal(t, progress.StateProgress, snap.State, "an interrupted task is not ended")
				close(release) // lets an abandoned first attempt return
				requireGoroutinesSettle(t, base)

				h.start(queue.WorkerConfig{})
				snap = h.waitTerminal(id)
				require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
				assert.JSONEq(t, `{"attempt":2}`, string(snap.Details.FinalResult))
				assert.Equal(t, []int{1, 2}, runs.get())
				assert.Equal(t, []string{"attempt 2 of 4 starts: attempt 1 was handed back at shutdown (not counted)"}, stepMessages(snap),
					"a hand-back is not a failed attempt, but the next one says why it runs again")
			})
		}
	})

	t.Run("AbandonedFlowFencedAfterHandBack", func(t *testing.T) {
		// A flow that ignores its context is abandoned at shutdown and
		// its task handed back; it goes on reporting while the next
		// attempt runs. What it reports before the hand-back is
		// recorded, before the next attempt's opening; nothing after.
		h := newHarness(t, newBackends)
		refused := &refusals{}
		started, reports := make(chan struct{}), make(chan string)
		secondStarted, secondDone := make(chan struct{}), make(chan struct{})
		h.reg.MustRegister("deaf", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
			if ft.Attempt > 1 {
				ft.Progress.Log("the second attempt reports")
				close(secondStarted)
				<-secondDone
				return "second", nil
			}
			ft.Progress.Log("before the hand-back")
			close(started)
			for msg := range reports {
				ft.Progress.Log(msg)
			}
			return "abandoned", nil
		}))
		first := h.start(queue.WorkerConfig{Name: "first", Logger: slog.New(refused),
			ShutdownGrace: 50 * time.Millisecond, AbandonAfter: 50 * time.Millisecond})
		id := h.enqueue("deaf", "", queue.EnqueueOptions{MaxAttempts: 3})
		waitFor(t, started, "first attempt start")
		first.stop() // its Run returns once the task is handed back

		h.start(queue.WorkerConfig{Name: "second"})
		finishSecond := sync.OnceFunc(func() { close(secondDone) })
		t.Cleanup(func() {
			finishSecond()
			close(reports) // the abandoned flow returns
		})
		waitFor(t, secondStarted, "second attempt start")

		const late = "after the hand-back"
		reports <- late
		eventually(t, func() bool { return len(refused.get()) > 0 || hasLog(t, h, id, late) },
			"the abandoned flow's report was neither refused nor recorded")
		finishSecond()
		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.JSONEq(t, `"second"`, string(snap.Details.FinalResult))
		assert.Equal(t, []string{
			"before the hand-back",
			"attempt 2 of 4 starts: attempt 1 was handed back at shutdown (not counted)",
			"the second attempt reports",
		}, stepMessages(snap), "the abandoned flow's report after the hand-back is not in the task's log")
		errs := refused.get()
		require.NotEmpty(t, errs, "the abandoned flow's report was not refused")
		for _, err := range errs {
			assert.ErrorIs(t, err, queue.ErrLeaseLost)
		}
	})

	t.Run("LeaseExtendedWhileFlowRuns", func(t *testing.T) {
		h := newHarness(t, newBackends)
		// Extended every third of it: a second leaves a loaded machine
		// (CI runs packages side by side) two chances to miss one.
		const lease = time.Second
		var runs attempts
		h.reg.MustRegister("marathon", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			select {
			case <-time.After(3 * lease):
				return "done", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
		h.start(queue.WorkerConfig{Name: "first", Lease: lease})
		h.start(queue.WorkerConfig{Name: "second", Lease: lease})
		id := h.enqueue("marathon", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, []int{1}, runs.get(), "the task was never leased to the other worker")
	})

	t.Run("ManyTasksTwoWorkers", func(t *testing.T) {
		h := newHarness(t, newBackends)
		const n = 200
		var mu sync.Mutex
		runs := map[string]int{}
		h.reg.MustRegister("echo", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			mu.Lock()
			runs[ft.ID]++
			mu.Unlock()
			ft.Progress.Progress(50, "echoing")
			return ft.ID, nil
		}))
		h.start(queue.WorkerConfig{Name: "first", Concurrency: 8})
		h.start(queue.WorkerConfig{Name: "second", Concurrency: 8})
		ids := make([]string, n)
		for i := range ids {
			ids[i] = h.enqueue("echo", "", queue.EnqueueOptions{})
		}
		for _, id := range ids {
			snap := h.waitTerminal(id)
			require.Equal(t, progress.StateSuccess, snap.State, "task %s: %q", id, snap.Details.Status)
			want, _ := json.Marshal(id)
			assert.JSONEq(t, string(want), string(snap.Details.FinalResult))
			requireOneTerminalEvent(t, h, id)
		}
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, runs, n)
		for id, r := range runs {
			assert.Equal(t, 1, r, "runs of task %s", id)
		}
	})
}

// refusals is a slog.Handler that keeps the errors of the reports a
// worker's reporters could not record ("progress event not recorded").
type refusals struct{ seen[error] }

func (r *refusals) Enabled(context.Context, slog.Level) bool { return true }

func (r *refusals) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message != "flows: progress event not recorded" {
		return nil
	}
	rec.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			r.add(err)
		}
		return true
	})
	return nil
}

func (r *refusals) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *refusals) WithGroup(string) slog.Handler      { return r }

// hasLog reports whether the task's event log holds a log step with msg.
func hasLog(t *testing.T, h *harness, id, msg string) bool {
	t.Helper()
	events, err := h.store.Events(context.Background(), id, "")
	require.NoError(t, err)
	for _, e := range events {
		if e.Step != nil && e.Step.Type == progress.StepLog && e.Step.Message == msg {
			return true
		}
	}
	return false
}

// requireOneTerminalEvent checks that the task's log holds exactly one
// terminal event.
func requireOneTerminalEvent(t *testing.T, h *harness, id string) {
	t.Helper()
	events, err := h.store.Events(context.Background(), id, "")
	require.NoError(t, err)
	n := 0
	for _, e := range events {
		if e.Terminal() {
			n++
		}
	}
	assert.Equal(t, 1, n, "terminal events of task %s", id)
}
