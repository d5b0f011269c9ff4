package queuetest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
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

// runAttempts checks that a task's attempts are told apart: each lease
// says why the attempt before it ended (Task.PreviousEnd), and each
// attempt after the first opens with a log step that says which attempt
// starts and why the one before ended, before the progress goes back.
func runAttempts(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("PreviousEnd", func(t *testing.T) {
		b, _ := newBackends(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()

		first := fetchOne(t, b, time.Minute)
		assert.Equal(t, 1, first.Task.Attempt)
		assert.Empty(t, first.Task.PreviousEnd, "a first attempt follows none")
		assert.Empty(t, first.Task.CountedEnd, "no attempt that counted has ended")

		require.NoError(t, b.Retry(ctx, first, time.Now(), queue.EndShutdown))
		second := fetchOne(t, b, time.Minute)
		assert.Equal(t, 2, second.Task.Attempt)
		assert.Equal(t, queue.EndShutdown, second.Task.PreviousEnd, "given back at once")
		assert.Empty(t, second.Task.CountedEnd, "a hand-back is no attempt that counted")

		require.NoError(t, b.Retry(ctx, second, time.Now().Add(20*time.Millisecond), queue.EndFailed))
		third := fetchOne(t, b, 50*time.Millisecond)
		assert.Equal(t, 3, third.Task.Attempt)
		assert.Equal(t, queue.EndFailed, third.Task.PreviousEnd, "given back for later")
		assert.Equal(t, queue.EndFailed, third.Task.CountedEnd)

		// Nobody extends the third lease: the next Fetch takes it over.
		fourth := fetchOne(t, b, time.Minute)
		assert.Equal(t, 4, fourth.Task.Attempt)
		assert.Equal(t, queue.EndLeaseExpired, fourth.Task.PreviousEnd, "taken over from an expired lease")
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, queue.EndLeaseExpired, got.PreviousEnd, "Get tells the end of the attempt before the current one")
		assert.Equal(t, queue.EndLeaseExpired, fourth.Task.CountedEnd, "a take-over ends an attempt that counts")
		assert.Equal(t, queue.EndLeaseExpired, got.CountedEnd, "Get")

		require.NoError(t, b.Retry(ctx, fourth, time.Now(), queue.EndStoreDown))
		fifth := fetchOne(t, b, time.Minute)
		assert.Equal(t, queue.EndStoreDown, fifth.Task.PreviousEnd, "a later Retry says why again")
		assert.Equal(t, queue.EndLeaseExpired, fifth.Task.CountedEnd, "a hand-back leaves the end of the attempt that counted")
		require.NoError(t, b.Ack(ctx, fifth))
	})

	t.Run("HandBacksDoNotCount", func(t *testing.T) {
		b, _ := newBackends(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()

		l := fetchOne(t, b, time.Minute)
		assert.Zero(t, l.Task.HandBacks, "a first attempt follows no hand-back")
		// Each lease is a run of its own (Attempt goes up every time);
		// the attempts handed back through no fault of the flow are
		// counted apart, so that they spend none of MaxAttempts.
		steps := []struct {
			end       queue.AttemptEnd
			handBacks int
		}{
			{queue.EndStoreDown, 1},
			{queue.EndShutdown, 2},
			{queue.EndHandedBack, 3},
			{queue.EndBackendDown, 4},
			{queue.EndFailed, 4},
			{queue.EndWorkerLost, 4},
			{queue.EndStoreDown, 5},
		}
		for i, step := range steps {
			assert.Equal(t, step.end != queue.EndFailed && step.end != queue.EndWorkerLost, !step.end.Counts(),
				"%q counts as an attempt", step.end)
			require.NoError(t, b.Retry(ctx, l, time.Now(), step.end))
			l = fetchOne(t, b, time.Minute)
			assert.Equal(t, i+2, l.Task.Attempt, "after %q", step.end)
			assert.Equal(t, step.handBacks, l.Task.HandBacks, "after %q", step.end)
			assert.Equal(t, step.end, l.Task.PreviousEnd)
		}
		// Nobody extends the next lease: taken over, it counts.
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndFailed))
		fetchOne(t, b, 20*time.Millisecond)
		l = fetchOne(t, b, time.Minute)
		assert.Equal(t, queue.EndLeaseExpired, l.Task.PreviousEnd)
		assert.Equal(t, len(steps)+3, l.Task.Attempt)
		assert.Equal(t, 5, l.Task.HandBacks, "a lease that expired is not a hand-back")
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, 5, got.HandBacks, "Get tells the hand-backs")

		// A Retry with a lease that is no longer held counts nothing.
		stale := *l
		require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndShutdown))
		assert.ErrorIs(t, b.Retry(ctx, &stale, time.Now(), queue.EndStoreDown), queue.ErrLeaseLost)
		got, err = b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, 6, got.HandBacks, "the hand-back of the held lease only")
	})

	t.Run("HookRetriesAreNoHandBacks", func(t *testing.T) {
		b, _ := newBackends(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()

		// A task given back for its finish hooks (it has ended) counts
		// that apart from its hand-backs; each such lease is one all
		// the same.
		l := fetchOne(t, b, time.Minute)
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndStoreDown))
		l = fetchOne(t, b, time.Minute)
		assert.False(t, queue.EndHooksPending.Counts(), "no attempt")
		for i := 1; i <= 2; i++ {
			require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndHooksPending))
			l = fetchOne(t, b, time.Minute)
			assert.Equal(t, 2+i, l.Task.Attempt)
			assert.Equal(t, queue.EndHooksPending, l.Task.PreviousEnd)
			assert.Equal(t, i, l.Task.HookRetries)
			assert.Equal(t, 1, l.Task.HandBacks, "a hook retry is no hand-back")
			assert.False(t, l.Task.HooksDue, "leased")
			assert.Equal(t, 2, l.Task.Attempts(), "a hand-back and the run that ended the task")
		}
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, 2, got.HookRetries, "Get tells the hook retries")
		assert.False(t, got.HooksDue, "leased")
		assert.Equal(t, 2, got.Attempts())

		// Given back for later, it waits for its time.
		stale := *l
		require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndHooksPending))
		requireNothingReady(t, b)
		// A Retry with a lease that is no longer held counts nothing.
		assert.ErrorIs(t, b.Retry(ctx, &stale, time.Now(), queue.EndHooksPending), queue.ErrLeaseLost)
		got, err = b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, 3, got.HookRetries, "the hook retry of the held lease only")
		assert.Equal(t, 1, got.HandBacks)
		// Its HookRetries counts the lease to come, which Attempt does
		// not yet: HooksDue says so, and Attempts stays the runs.
		assert.Equal(t, 4, got.Attempt)
		assert.True(t, got.HooksDue, "given back for its hooks, not leased since")
		assert.Equal(t, 2, got.Attempts(), "the runs while it waits to run its hooks again")
	})

	t.Run("HooksDueUntilLeased", func(t *testing.T) {
		// HooksDue holds from the give-back for the hooks until a lease
		// takes the task, ready or delayed, and Attempts with it; a
		// take-over of that lease, or its give-back for another cause,
		// clears it.
		b, _ := newBackends(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()
		get := func() *queue.Task {
			t.Helper()
			got, err := b.Get(ctx, task.ID)
			require.NoError(t, err)
			return got
		}
		l := fetchOne(t, b, time.Minute)
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndHooksPending))
		got := get()
		assert.True(t, got.HooksDue, "ready for its hooks")
		assert.Equal(t, 1, got.Attempts())
		l = fetchOne(t, b, 50*time.Millisecond)
		assert.False(t, l.Task.HooksDue)
		assert.Equal(t, 1, l.Task.Attempts())
		got = get()
		assert.False(t, got.HooksDue, "leased for its hooks")
		assert.Equal(t, 1, got.Attempts())

		// The lease passes: the one that takes it over is counted (a
		// lease lost after the end is not left out).
		l = fetchOne(t, b, time.Minute)
		require.Equal(t, queue.EndLeaseExpired, l.Task.PreviousEnd)
		assert.False(t, get().HooksDue)
		assert.Equal(t, 2, get().Attempts())
		require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndHooksPending))
		assert.True(t, get().HooksDue, "delayed for its hooks")
		assert.Equal(t, 2, get().Attempts())
	})

	t.Run("StaleRetryChangesNothing", func(t *testing.T) {
		b, _ := newBackends(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()

		// The first lease passes and another worker takes the task over.
		stale := fetchOne(t, b, 20*time.Millisecond)
		current := fetchOne(t, b, time.Minute)
		require.Equal(t, task.ID, current.Task.ID)
		require.Equal(t, queue.EndLeaseExpired, current.Task.PreviousEnd)
		// The worker of the first lease comes back and gives the task
		// back: neither why nor a hand-back reaches the task, whose
		// current attempt is another worker's.
		for _, why := range []queue.AttemptEnd{queue.EndShutdown, queue.EndFailed, queue.EndStoreDown} {
			assert.ErrorIs(t, b.Retry(ctx, stale, time.Now(), why), queue.ErrLeaseLost, "%q", why)
			got, err := b.Get(ctx, task.ID)
			require.NoError(t, err)
			assert.Equal(t, queue.EndLeaseExpired, got.PreviousEnd, "a stale Retry (%q) told why the current attempt's predecessor ended", why)
			assert.Zero(t, got.HandBacks, "a stale Retry (%q) counted a hand-back", why)
		}
		// The current holder's Retry is the one the next attempt tells.
		require.NoError(t, b.Retry(ctx, current, time.Now(), queue.EndFailed))
		next := fetchOne(t, b, time.Minute)
		assert.Equal(t, 3, next.Task.Attempt)
		assert.Equal(t, queue.EndFailed, next.Task.PreviousEnd)
		assert.Zero(t, next.Task.HandBacks)

		// A lease given back once already is stale too: its second
		// Retry changes nothing, though nobody has leased the task since.
		again := *next
		require.NoError(t, b.Retry(ctx, next, time.Now().Add(time.Hour), queue.EndStoreDown))
		assert.ErrorIs(t, b.Retry(ctx, &again, time.Now(), queue.EndFailed), queue.ErrLeaseLost)
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, queue.EndStoreDown, got.PreviousEnd, "the second Retry of one lease told why it ended")
		assert.Equal(t, 1, got.HandBacks)
	})

	t.Run("StoreDownSpendsNoAttempt", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs attempts
		h.reg.MustRegister("steps", stepsFlow(func(ft *flow.Task) error {
			runs.add(ft.Attempt)
			return nil
		}))
		// The store refuses the start of more attempts than the task
		// has, then comes back.
		const refused = 4
		store := &refusingStore{Backend: h.store}
		store.refusals.Store(refused)
		h.startWithStore(store, queue.WorkerConfig{})
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 2})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q: the hand-backs spent the task's attempts", snap.Details.Status)
		assert.Equal(t, []int{refused + 1}, runs.get(), "the flow runs once the store is back")
		assert.Equal(t, []string{
			"attempt 5 of 6 starts: attempt 4 could not record its progress (not counted; 4 hand-backs so far)",
			"step of attempt 5",
		}, stepMessages(snap), "the opening step says why the attempt before ended, and that it does not count")
		got, err := h.backend.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, refused+1, got.Attempt)
		assert.Equal(t, refused, got.HandBacks)
	})

	t.Run("HandBacksBounded", func(t *testing.T) {
		h := newHarness(t, newBackends)
		var runs attempts
		h.reg.MustRegister("steps", stepsFlow(func(ft *flow.Task) error {
			runs.add(ft.Attempt)
			return nil
		}))
		// A store that refuses the task for good (here: four times, one
		// more than the worker allows) does not keep it going round for
		// ever: once the hand-backs pass MaxHandBacks, the task ends
		// FAILURE, saying why.
		store := &refusingStore{Backend: h.store}
		store.refusals.Store(4)
		h.startWithStore(store, queue.WorkerConfig{MaxHandBacks: 3})
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 2})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "gave up after 4 hand-backs: progress store unavailable", snap.Details.Status)
		assert.Empty(t, runs.get(), "the flow never ran")
		eventually(t, func() bool {
			dead, err := h.backend.Dead(context.Background(), 0)
			require.NoError(t, err)
			return len(dead) == 1 && dead[0].ID == id
		}, "the task is buried")
	})

	t.Run("GaveUpAfterAHandBack", func(t *testing.T) {
		// The attempt that counted ended one way or another (taken over
		// from a lost worker or an expired lease, or given back); the
		// leases after it were handed back (the store could not record
		// the give-up), and the next finds the attempts spent. Its
		// status must say how the attempt that counted ended, and what
		// followed it, not blame the store for the attempts spent.
		for _, tc := range []struct {
			name string
			// first leases the task and ends its attempt, which counts,
			// returning the lease that follows it.
			first     func(t *testing.T, h *harness) *queue.Lease
			handBacks []queue.AttemptEnd
			counted   queue.AttemptEnd
			want      string
		}{
			{
				name: "WorkerLost",
				first: func(t *testing.T, h *harness) *queue.Lease {
					reg, ok := h.backend.(queue.WorkerRegistry)
					if !ok {
						t.Skipf("%T keeps no worker registry", h.backend)
					}
					ghost := queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}
					require.NoError(t, reg.Heartbeat(context.Background(), ghost))
					fetchAs(t, h.backend, ghost.Name)
					return judgeUntilTaken(t, h.backend, queue.WorkerInfo{Name: "judge", Heartbeat: 300 * time.Millisecond})
				},
				handBacks: []queue.AttemptEnd{queue.EndStoreDown},
				counted:   queue.EndWorkerLost,
				want:      "gave up after 1 attempt: the worker was lost (then handed back: progress store unavailable)",
			},
			{
				name: "LeaseExpired",
				first: func(t *testing.T, h *harness) *queue.Lease {
					fetchOne(t, h.backend, 20*time.Millisecond)
					return fetchOne(t, h.backend, time.Minute)
				},
				handBacks: []queue.AttemptEnd{queue.EndBackendDown},
				counted:   queue.EndLeaseExpired,
				want:      "gave up after 1 attempt: the lease expired (then handed back: backend unreachable)",
			},
			{
				name: "GivenBack",
				first: func(t *testing.T, h *harness) *queue.Lease {
					l := fetchOne(t, h.backend, time.Minute)
					require.NoError(t, h.backend.Retry(context.Background(), l, time.Now(), queue.EndWorkerLost))
					return fetchOne(t, h.backend, time.Minute)
				},
				handBacks: []queue.AttemptEnd{queue.EndBackendDown, queue.EndStoreDown},
				counted:   queue.EndWorkerLost,
				want:      "gave up after 1 attempt: the worker was lost (then handed back: progress store unavailable)",
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				var runs attempts
				h.reg.MustRegister("steps", stepsFlow(func(ft *flow.Task) error {
					runs.add(ft.Attempt)
					return nil
				}))
				id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 1})
				ctx := context.Background()
				l := tc.first(t, h)
				assert.Equal(t, tc.counted, l.Task.CountedEnd, "the lease after the attempt that counted")
				for i, why := range tc.handBacks {
					require.NoError(t, h.backend.Retry(ctx, l, time.Now(), why))
					if i < len(tc.handBacks)-1 {
						l = fetchOne(t, h.backend, time.Minute)
						assert.Equal(t, tc.counted, l.Task.CountedEnd, "a lease after a hand-back")
					}
				}
				got, err := h.backend.Get(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, tc.counted, got.CountedEnd, "Get")
				assert.Equal(t, tc.handBacks[len(tc.handBacks)-1], got.PreviousEnd, "Get")
				h.start(queue.WorkerConfig{})

				snap := h.waitTerminal(id)
				require.Equal(t, progress.StateFailure, snap.State)
				assert.Equal(t, tc.want, snap.Details.Status)
				assert.Empty(t, runs.get(), "the flow never ran")
			})
		}
	})

	t.Run("RetriedAfterError", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("steps", stepsFlow(func(ft *flow.Task) error {
			if ft.Attempt == 1 {
				return errors.New("model overloaded")
			}
			return nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		msgs := stepMessages(snap)
		require.Len(t, msgs, 4, "%q", msgs)
		assert.Equal(t, "step of attempt 1", msgs[0])
		assert.True(t, strings.HasPrefix(msgs[1], "attempt 1 failed: model overloaded; retrying in "), msgs[1])
		assert.Equal(t, "attempt 2 of 3 starts: attempt 1 failed", msgs[2])
		assert.Equal(t, "step of attempt 2", msgs[3])
		requireAttemptsExplained(t, h, id, 2)
	})

	t.Run("LeaseExpired", func(t *testing.T) {
		h := newHarness(t, newBackends)
		h.reg.MustRegister("steps", stepsFlow(func(*flow.Task) error { return nil }))
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 3})

		// A worker leases the task, gets as far as 40% and one step, and
		// dies without a word.
		lost := fetchOne(t, h.backend, 50*time.Millisecond)
		require.Equal(t, id, lost.Task.ID)
		_, err := h.store.Append(context.Background(), id,
			progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"},
			progress.Event{Type: progress.EventProgress, Progress: 40, Status: "half way"},
			progress.LogEvent("step of attempt 1"))
		require.NoError(t, err)

		h.start(queue.WorkerConfig{})
		requireSecondAttempt(t, h, id, "attempt 2 of 3 starts: attempt 1 timed out: its lease expired")
	})

	t.Run("HandedBackAtShutdown", func(t *testing.T) {
		h := newHarness(t, newBackends)
		started := make(chan struct{})
		h.reg.MustRegister("steps", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			reportSteps(ft)
			if ft.Attempt == 1 {
				close(started)
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
			return "done", nil
		}))
		first := h.start(queue.WorkerConfig{ShutdownGrace: 20 * time.Millisecond})
		// One attempt only: a worker that shuts down is no fault of the
		// flow's, and its hand-back spends none.
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 1})
		waitFor(t, started, "first attempt")
		eventually(t, func() bool { return len(stepMessages(h.snapshot(id))) == 1 }, "the first step was not recorded")
		first.stop()

		h.start(queue.WorkerConfig{})
		requireSecondAttempt(t, h, id, "attempt 2 of 2 starts: attempt 1 was handed back at shutdown (not counted)")
	})
}

// refusingStore wraps a progress store and refuses its first Appends, as
// a store that cannot be reached does.
type refusingStore struct {
	progress.Backend
	refusals atomic.Int32
}

func (s *refusingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	if s.refusals.Add(-1) >= 0 {
		return "", errors.New("queuetest: the store is unavailable")
	}
	return s.Backend.Append(ctx, id, events...)
}

// reportSteps reports what each attempt of stepsFlow does: 40%, a step
// naming the attempt, then 70%.
func reportSteps(ft *flow.Task) {
	ft.Progress.Progress(40, "half way")
	ft.Progress.Log(fmt.Sprintf("step of attempt %d", ft.Attempt))
	ft.Progress.Progress(70, "nearly there")
}

// stepsFlow reports as reportSteps says, then returns what fail returns
// for the attempt (an error fails it).
func stepsFlow(fail func(ft *flow.Task) error) flow.Flow {
	return flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		reportSteps(ft)
		if err := fail(ft); err != nil {
			return nil, err
		}
		return fmt.Sprintf("done on attempt %d", ft.Attempt), nil
	})
}

// requireSecondAttempt waits for task id, whose flow reports as
// reportSteps says, to succeed on its second attempt, and checks that
// its log holds the first attempt's step, the step opening the second,
// opening, and the second's step, and that its progress went back only
// after that opening.
func requireSecondAttempt(t *testing.T, h *harness, id, opening string) {
	t.Helper()
	snap := h.waitTerminal(id)
	require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
	assert.Equal(t, []string{"step of attempt 1", opening, "step of attempt 2"}, stepMessages(snap))
	requireAttemptsExplained(t, h, id, 2)
}

// attemptStarts matches the log step that opens an attempt after the
// first.
var attemptStarts = regexp.MustCompile(`^attempt (\d+)( of \d+)? starts: `)

// requireAttemptsExplained reads the events of task id and checks that
// its progress never goes back but right after a log step that opens an
// attempt, and that the attempts up to last were each opened by one, in
// order. It returns those steps' messages.
func requireAttemptsExplained(t *testing.T, h *harness, id string, last int) []string {
	t.Helper()
	events, err := h.store.Events(context.Background(), id, "")
	require.NoError(t, err)
	snap := progress.NewSnapshot()
	explained := false // an attempt opened since the progress last changed
	var opened []string
	for i, e := range events {
		before := snap.Details.Progress
		snap.Apply(e)
		if e.Type == progress.EventStep && e.Step.Type == progress.StepLog {
			if m := attemptStarts.FindStringSubmatch(e.Step.Message); m != nil {
				assert.Equal(t, fmt.Sprint(len(opened)+2), m[1], "attempt opened by event %d: %q", i, e.Step.Message)
				opened = append(opened, e.Step.Message)
				explained = true
			}
		}
		after := snap.Details.Progress
		if after < before {
			assert.True(t, explained, "event %d takes the progress back from %d to %d without a step that opens an attempt first: %+v",
				i, before, after, events)
		}
		if after != before {
			explained = false
		}
	}
	assert.Len(t, opened, last-1, "steps that open an attempt: %q", opened)
	return opened
}
