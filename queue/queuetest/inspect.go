package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runInspector checks queue.Inspector on the backends: listings, counts,
// the worker registry and cancellation by filter.
func runInspector(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"ListsNewestFirstWithFilters", testListFilters},
		{"PagesWithStableCursors", testListPaging},
		{"RefusesBadQueries", testListBadQueries},
		{"ListsByOwner", testListOwner},
		{"ListsByTimeRange", testListTimeRange},
		{"Stats", testStats},
		{"StatsCountsRetryWaitAsDelayed", testStatsRetryWait},
		{"StatsCancelledWaiting", testStatsCancelledWaiting},
		{"HooksWaiting", testHooksWaiting},
		{"ListsHandBacks", testListHandBacks},
		{"ListsRunsOfTheFlow", testListHookReruns},
		{"WorkerRegistry", testWorkerRegistry},
		{"CancelMatching", testCancelMatching},
		{"CancelMatchingByOwner", testCancelMatchingOwner},
		{"CancelMatchingByTimeRange", testCancelMatchingTimeRange},
		{"CancelMatchingCountsRunningOnce", testCancelMatchingRunning},
		{"DeadAndRequeue", testInspectorDead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newHarness(t, newBackends)) })
	}
}

// inspector returns an Inspector of the harness's backends.
func (h *harness) inspector() *queue.Inspector {
	return queue.NewInspector(h.backend, h.store, queue.InspectorConfig{Logger: quiet})
}

// listAll lists every page of o and returns the tasks in order.
func listAll(t *testing.T, in *queue.Inspector, o queue.ListOptions) []queue.TaskSummary {
	t.Helper()
	var all []queue.TaskSummary
	for range 1000 {
		page, err := in.List(context.Background(), o)
		require.NoError(t, err, "List %+v", o)
		all = append(all, page.Tasks...)
		if page.Next == "" {
			return all
		}
		require.NotEqual(t, o.Cursor, page.Next, "the cursor did not move")
		o.Cursor = page.Next
	}
	require.FailNow(t, "listing did not end")
	return nil
}

func summaryIDs(list []queue.TaskSummary) []string {
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return ids
}

// requireListed checks that list holds exactly the tasks want, newest
// first (by the time each entered its state, then by id).
func requireListed(t *testing.T, want []string, list []queue.TaskSummary, msg string) {
	t.Helper()
	require.ElementsMatch(t, want, summaryIDs(list), msg)
	require.True(t, slices.IsSortedFunc(list, func(a, b queue.TaskSummary) int {
		at, bt := a.ChangedAt().UnixMilli(), b.ChangedAt().UnixMilli()
		if at != bt {
			return int(bt - at)
		}
		if a.ID > b.ID {
			return -1
		}
		return 1
	}), "%s: not newest first: %+v", msg, list)
}

// mixedTasks runs tasks into every state: three of flow "ok" that
// succeed, two of "bad" that fail, one of "slow" left running, and two of
// "later" left pending (due in an hour). It returns their ids by flow and
// a function that lets the slow one end.
func (h *harness) mixedTasks() (ids map[string][]string, release func()) {
	h.t.Helper()
	h.declare("later")
	h.reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "fine", nil }))
	h.reg.MustRegister("bad", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, flow.Permanent(errors.New("broken"))
	}))
	started, unblock := make(chan struct{}, 1), make(chan struct{})
	h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
		task.Progress.Progress(40, "half way")
		started <- struct{}{}
		select {
		case <-unblock:
		case <-ctx.Done():
		}
		return "slow", nil
	}))
	h.start(queue.WorkerConfig{Concurrency: 4})
	ids = map[string][]string{}
	add := func(name string, opts queue.EnqueueOptions) {
		// Tasks a few milliseconds apart, so that their order is
		// their enqueue order.
		time.Sleep(3 * time.Millisecond)
		ids[name] = append(ids[name], h.enqueue(name, `{"x":1}`, opts))
	}
	for range 3 {
		add("ok", queue.EnqueueOptions{Owner: "user:ada"})
	}
	for range 2 {
		add("bad", queue.EnqueueOptions{})
	}
	for _, id := range append(ids["ok"], ids["bad"]...) {
		h.waitTerminal(id)
	}
	add("slow", queue.EnqueueOptions{})
	waitFor(h.t, started, "the slow flow to start")
	eventually(h.t, func() bool { return h.snapshot(ids["slow"][0]).Details.Progress == 40 }, "the slow flow's progress")
	for range 2 {
		add("later", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	}
	var once bool
	return ids, func() {
		if !once {
			once = true
			close(unblock)
		}
	}
}

func testListFilters(t *testing.T, h *harness) {
	ids, release := h.mixedTasks()
	defer release()
	in := h.inspector()

	all := listAll(t, in, queue.ListOptions{})
	var every []string
	for _, list := range ids {
		every = append(every, list...)
	}
	requireListed(t, every, all, "all tasks")
	byID := map[string]queue.TaskSummary{}
	for _, s := range all {
		byID[s.ID] = s
	}

	states := map[string]progress.State{"ok": progress.StateSuccess, "bad": progress.StateFailure,
		"slow": progress.StateProgress, "later": progress.StatePending}
	for name, list := range ids {
		for _, id := range list {
			s := byID[id]
			assert.Equal(t, name, s.Flow, "flow of %s", id)
			assert.Equal(t, states[name], s.State, "state of %s task %s", name, id)
			assert.Equal(t, 3, s.MaxAttempts, "max attempts of %s", id)
			assert.False(t, s.EnqueuedAt.IsZero(), "enqueued_at of %s", id)
			if name == "ok" {
				assert.Equal(t, "user:ada", s.Owner, "owner of %s", id)
			} else {
				assert.Empty(t, s.Owner, "owner of %s", id)
			}
			switch name {
			case "ok", "bad":
				assert.Equal(t, 1, s.Attempt, "attempt of %s", id)
				assert.False(t, s.StartedAt.IsZero(), "started_at of %s task", name)
				assert.False(t, s.EndedAt.IsZero(), "ended_at of %s task", name)
				assert.False(t, s.EndedAt.Before(s.StartedAt), "ended before it started: %+v", s)
				assert.False(t, s.StartedAt.Before(s.EnqueuedAt.Truncate(time.Millisecond)), "started before it was enqueued: %+v", s)
			case "slow":
				assert.Equal(t, 40, s.Progress)
				assert.Equal(t, "half way", s.Status)
				assert.False(t, s.StartedAt.IsZero(), "started_at of the running task")
				assert.True(t, s.EndedAt.IsZero(), "ended_at of the running task")
			case "later":
				assert.Equal(t, 0, s.Attempt)
				assert.True(t, s.StartedAt.IsZero(), "started_at of a pending task")
			}
		}
	}
	assert.Equal(t, "broken", byID[ids["bad"][0]].Status)

	for _, tc := range []struct {
		name string
		o    queue.ListOptions
		want []string
	}{
		{"SUCCESS", queue.ListOptions{State: progress.StateSuccess}, ids["ok"]},
		{"FAILURE", queue.ListOptions{State: progress.StateFailure}, ids["bad"]},
		{"PROGRESS", queue.ListOptions{State: progress.StateProgress}, ids["slow"]},
		{"PENDING", queue.ListOptions{State: progress.StatePending}, ids["later"]},
		{"flow bad", queue.ListOptions{Flow: "bad"}, ids["bad"]},
		{"flow ok, SUCCESS", queue.ListOptions{Flow: "ok", State: progress.StateSuccess}, ids["ok"]},
		{"flow ok, FAILURE", queue.ListOptions{Flow: "ok", State: progress.StateFailure}, nil},
		{"unknown flow", queue.ListOptions{Flow: "nope"}, nil},
		{"owner user:ada", queue.ListOptions{Owner: "user:ada"}, ids["ok"]},
		{"owner user:ada, flow ok", queue.ListOptions{Owner: "user:ada", Flow: "ok"}, ids["ok"]},
		{"owner user:ada, FAILURE", queue.ListOptions{Owner: "user:ada", State: progress.StateFailure}, nil},
		{"owner user", queue.ListOptions{Owner: "user"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := listAll(t, in, tc.o)
			requireListed(t, tc.want, list, tc.name)
		})
	}
	// Ended tasks come by the time they ended, the last first.
	okList := listAll(t, in, queue.ListOptions{Flow: "ok"})
	require.Len(t, okList, 3)
	for i := 1; i < len(okList); i++ {
		assert.False(t, okList[i].EndedAt.Truncate(time.Millisecond).After(okList[i-1].EndedAt), "%+v", okList)
	}
}

func testListPaging(t *testing.T, h *harness) {
	h.declare("paged")
	var ids []string
	for range 7 {
		time.Sleep(2 * time.Millisecond)
		ids = append(ids, h.enqueue("paged", "", queue.EnqueueOptions{}))
	}
	in := h.inspector()
	ctx := context.Background()
	whole, err := in.List(ctx, queue.ListOptions{Limit: 100})
	require.NoError(t, err)
	require.Len(t, whole.Tasks, 7)
	assert.Empty(t, whole.Next, "one page holds everything: no next cursor")
	slices.Reverse(ids)
	require.Equal(t, ids, summaryIDs(whole.Tasks), "newest first")

	first, err := in.List(ctx, queue.ListOptions{Limit: 3})
	require.NoError(t, err)
	require.Equal(t, ids[:3], summaryIDs(first.Tasks))
	require.NotEmpty(t, first.Next)
	// Tasks added after the first page do not shift the next ones.
	time.Sleep(2 * time.Millisecond)
	h.enqueue("paged", "", queue.EnqueueOptions{})
	rest := listAll(t, in, queue.ListOptions{Limit: 3, Cursor: first.Next})
	assert.Equal(t, ids[3:], summaryIDs(rest), "the pages after the first, with a task added meanwhile")

	exact, err := in.List(ctx, queue.ListOptions{Limit: 8})
	require.NoError(t, err)
	require.Len(t, exact.Tasks, 8)
	if exact.Next != "" {
		last, err := in.List(ctx, queue.ListOptions{Limit: 8, Cursor: exact.Next})
		require.NoError(t, err)
		assert.Empty(t, last.Tasks, "nothing after the last task")
		assert.Empty(t, last.Next)
	}
}

func testListBadQueries(t *testing.T, h *harness) {
	h.declare("any")
	h.enqueue("any", "", queue.EnqueueOptions{})
	in := h.inspector()
	ctx := context.Background()
	for _, o := range []queue.ListOptions{
		{State: "DONE"},
		{State: "pending"},
		{Limit: -1},
		{Limit: queue.MaxListLimit + 1},
		{Cursor: "bogus"},
		{Cursor: "123.not a valid id"},
		{Cursor: "-5.abc"},
		{Since: time.Now(), Until: time.Now().Add(-time.Second)},
		{Until: time.Unix(100, 0), Since: time.Unix(101, 0), Owner: "x"},
	} {
		_, err := in.List(ctx, o)
		assert.ErrorIs(t, err, queue.ErrInvalidQuery, "List %+v", o)
	}
	for _, f := range []queue.CancelFilter{{State: progress.StateSuccess}, {State: "x"}, {Limit: -2}, {Limit: queue.MaxListLimit + 1},
		{Since: time.Now(), Until: time.Now().Add(-time.Second)},
		{Until: time.Unix(100, 0), Since: time.Unix(101, 0), Owner: "x", Flow: "ok"},
		{Cursor: "bogus"}, {Cursor: "PENDING:bogus"}, {Cursor: "SUCCESS:"}, {Cursor: "123.abc"},
		{State: progress.StatePending, Cursor: "PROGRESS:"}} {
		_, err := in.CancelMatching(ctx, f)
		assert.ErrorIs(t, err, queue.ErrInvalidQuery, "CancelMatching %+v", f)
	}
	page, err := in.List(ctx, queue.ListOptions{Limit: queue.MaxListLimit})
	require.NoError(t, err)
	assert.Len(t, page.Tasks, 1)
}

func testStats(t *testing.T, h *harness) {
	ids, release := h.mixedTasks()
	defer release()
	in := h.inspector()
	counts := queue.StateCounts{Pending: 2, Progress: 1, Success: 3, Failure: 2}
	want := []queue.FlowCounts{
		{Flow: "bad", Counts: queue.StateCounts{Failure: 2}},
		{Flow: "later", Counts: queue.StateCounts{Pending: 2}},
		{Flow: "ok", Counts: queue.StateCounts{Success: 3}},
		{Flow: "slow", Counts: queue.StateCounts{Progress: 1}},
	}
	// mixedTasks waited for the tasks' records. The counts come from the
	// task index, whose entries land behind the records (on a Cluster, on
	// another node), and the worker acknowledges and buries each task
	// after it recorded its end: wait for what Stats reads.
	var st queue.Stats
	eventually(t, func() bool {
		var err error
		st, err = in.Stats(context.Background())
		require.NoError(t, err)
		return st.Counts == counts && slices.Equal(st.Flows, want) && st.Running == 1 && st.Dead == 2 &&
			st.LastMinute.Succeeded == 3 && st.LastMinute.Failed == 2
	}, "the stats of the mixed tasks; last %+v", &st)
	assert.Equal(t, counts, st.Counts)
	assert.Equal(t, want, st.Flows)
	assert.Equal(t, int64(2), st.Delayed, "the two tasks due in an hour")
	assert.Equal(t, int64(1), st.Running, "the slow task")
	assert.Equal(t, int64(0), st.Ready)
	assert.True(t, st.OldestReady.IsZero(), "nothing waits: %v", st.OldestReady)
	assert.Equal(t, int64(2), st.Dead, "the failed tasks are buried")
	assert.Equal(t, int64(3), st.LastMinute.Succeeded)
	assert.Equal(t, int64(2), st.LastMinute.Failed)
	assert.Equal(t, queue.StatsWindow, st.LastMinute.Window)
	assert.InDelta(t, 5.0/60, st.LastMinute.PerSecond, 1e-9)
	assert.Equal(t, 5, st.LastMinute.Sampled, "every task that ran and ended")
	assert.LessOrEqual(t, st.LastMinute.Run.P50, st.LastMinute.Run.Max)
	assert.False(t, st.At.IsZero())
	require.Len(t, st.Workers, 1, "the harness's worker")
	w := st.Workers[0]
	assert.True(t, w.Alive, "worker %+v", w)
	assert.Equal(t, 4, w.Slots)
	assert.Equal(t, queue.DefaultHeartbeat, w.Heartbeat)
	assert.NotEmpty(t, w.Name)
	_ = ids

	// A task due now and no worker with a free slot: it waits, ready.
	release()
	h.waitTerminal(ids["slow"][0])
	h.reg.MustRegister("waits", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	before := time.Now()
	for _, rw := range h.workers() {
		rw.stop()
	}
	h.enqueue("waits", "", queue.EnqueueOptions{})
	st, err := in.Stats(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(1), st.Ready)
	assert.False(t, st.OldestReady.Before(before.Add(-time.Second)), "oldest ready %v, enqueued after %v", st.OldestReady, before)
	assert.Empty(t, st.Workers, "the stopped worker retired from the registry")
}

// testStatsRetryWait checks how a task waiting for its next attempt is
// counted: PROGRESS by state (it started and has not ended), but Delayed,
// not Running, in the depth.
func testStatsRetryWait(t *testing.T, h *harness) {
	started, unblock := make(chan struct{}, 1), make(chan struct{})
	h.reg.MustRegister("slow", flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
		started <- struct{}{}
		select {
		case <-unblock:
		case <-ctx.Done():
		}
		return "slow", nil
	}))
	failed := make(chan struct{}, 1)
	h.reg.MustRegister("flaky", flow.Func(func(context.Context, *flow.Task) (any, error) {
		failed <- struct{}{}
		return nil, errors.New("try again")
	}))
	h.start(queue.WorkerConfig{Concurrency: 4, Backoff: func(int) time.Duration { return time.Hour }})
	t.Cleanup(func() { close(unblock) }) // before the worker stops
	slow := h.enqueue("slow", "", queue.EnqueueOptions{})
	waitFor(t, started, "the slow flow to start")
	flaky := h.enqueue("flaky", "", queue.EnqueueOptions{MaxAttempts: 2})
	waitFor(t, failed, "the flaky flow's first attempt")
	in := h.inspector()
	ctx := context.Background()
	var st queue.Stats
	// The slow task's start is recorded with its flow's first events,
	// which it never reports: it lands in the background, and on a
	// Cluster its index entry after its record. Both must come.
	eventually(t, func() bool {
		var err error
		st, err = in.Stats(ctx)
		return err == nil && st.Delayed == 1 && st.Counts == queue.StateCounts{Progress: 2}
	}, "the flaky task waiting for its retry, and both counted as started and not ended")
	assert.Equal(t, int64(1), st.Running, "only the slow task runs")
	assert.Equal(t, int64(0), st.Ready)
	assert.Equal(t, progress.StateProgress, h.snapshot(flaky).State)
	assert.Equal(t, progress.StateProgress, h.snapshot(slow).State)
}

// testStatsCancelledWaiting checks how a task cancelled while it waits
// for a worker is counted, as queue.Stats documents it: it keeps its
// place in the queue until a worker takes it and drops it without running
// it, and a backend may count it in Ready and its wait in OldestReady
// until then (Redis does, Memory does not: their own tests pin which). A
// delayed task that is cancelled is made ready to be dropped: it is no
// longer Delayed. What every backend owes: the task that still waits is
// counted, nothing is counted twice, and once a worker has dropped the
// cancelled tasks they are counted nowhere.
func testStatsCancelledWaiting(t *testing.T, h *harness) {
	h.reg.MustRegister("waits", flow.Func(func(context.Context, *flow.Task) (any, error) { return "ran", nil }))
	ctx := context.Background()
	first := h.enqueue("waits", "", queue.EnqueueOptions{})
	// The first task's wait begins strictly before the second's, at a
	// millisecond's precision (the Redis stream's).
	time.Sleep(5 * time.Millisecond)
	afterFirst := time.Now()
	second := h.enqueue("waits", "", queue.EnqueueOptions{})
	later := h.enqueue("waits", "", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	in := h.inspector()
	st, err := in.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), st.Ready, "before the cancellations")
	require.Equal(t, int64(1), st.Delayed)
	require.False(t, st.OldestReady.After(afterFirst), "the first task is the oldest waiting: %v", st.OldestReady)

	require.NoError(t, h.broker.Cancel(ctx, first))
	require.NoError(t, h.broker.Cancel(ctx, later))
	st, err = in.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(0), st.Delayed, "the delayed task, cancelled, waits for no time")
	assert.GreaterOrEqual(t, st.Ready, int64(1), "the second task waits for a run")
	assert.LessOrEqual(t, st.Ready, int64(3), "at most the second and the two cancelled tasks")
	assert.False(t, st.OldestReady.IsZero(), "the second task waits")
	assert.False(t, st.OldestReady.After(time.Now()), "oldest ready %v", st.OldestReady)
	if d, ok := h.backend.(queue.DepthReader); ok {
		depth, err := d.Depth(ctx)
		require.NoError(t, err)
		assert.Equal(t, queue.Depth{Ready: st.Ready}, depth, "Depth counts as Stats does")
	}

	// A worker drops the cancelled tasks and runs the second; then
	// nothing waits.
	h.start(queue.WorkerConfig{})
	assert.Equal(t, progress.StateSuccess, h.waitTerminal(second).State)
	for _, id := range []string{first, later} {
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
	}
	eventually(t, func() bool {
		st, err = in.Stats(ctx)
		require.NoError(t, err)
		return st.Ready == 0 && st.Delayed == 0 && st.Running == 0
	}, "nothing waits once the worker took them; last %+v", &st)
	assert.True(t, st.OldestReady.IsZero(), "nothing waits: %v", st.OldestReady)
}

// testListHandBacks checks that a listing shows the hand-backs of a task
// apart from its attempts: a task whose store refused its first two runs
// (no fault of its flow's) ran three times, and had four runs of which
// two count.
func testListHandBacks(t *testing.T, h *harness) {
	h.reg.MustRegister("steps", stepsFlow(func(*flow.Task) error { return nil }))
	store := &refusingStore{Backend: h.store}
	store.refusals.Store(2)
	h.startWithStore(store, queue.WorkerConfig{})
	id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 2})
	require.Equal(t, progress.StateSuccess, h.waitTerminal(id).State)

	in := h.inspector()
	var s queue.TaskSummary
	eventually(t, func() bool {
		list := listAll(t, in, queue.ListOptions{State: progress.StateSuccess})
		if len(list) != 1 {
			return false
		}
		s = list[0]
		return true
	}, "the task listed as a success")
	assert.Equal(t, id, s.ID)
	assert.Equal(t, 3, s.Attempt, "every run has a number")
	assert.Equal(t, 2, s.MaxAttempts)
	assert.Equal(t, 2, s.HandBacks, "the refused runs")
	assert.Equal(t, 4, s.Runs(), "each hand-back gives one run more")
	info, err := in.Task(context.Background(), id)
	require.NoError(t, err)
	assert.Equal(t, 2, info.Task.HandBacks)

	none := queue.TaskSummary{Attempt: 1, MaxAttempts: 3}
	assert.Equal(t, 3, none.Runs())
	assert.Zero(t, (&queue.TaskSummary{HandBacks: 2}).Runs(), "no bound, no runs to tell")
}

// testListHookReruns checks that a listing's Attempt counts the runs of
// the task's flow: the leases that only ran its finish hooks again
// (queue.ErrRetryHooks) are left out, whether the task waits to run them
// again or is done with them. Each task runs its flow twice (the first
// run fails) and has its hooks run again twice; the hooks of "keeps" ask
// a third time, and wait an hour for it.
func testListHookReruns(t *testing.T, h *harness) {
	for _, name := range []string{"keeps", "settles"} {
		h.reg.MustRegister(name, flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
			if ft.Attempt == 1 {
				return nil, errors.New("not yet")
			}
			return "done", nil
		}))
	}
	rec := newFinishes(h)
	h.start(queue.WorkerConfig{
		Concurrency: 1, Backoff: hourFrom(3),
		OnFinish: []queue.FinishHook{rec.hook, func(_ context.Context, f queue.Finished) error {
			if f.Task.Flow == "keeps" || f.Task.Flow == "settles" && f.Task.HookRetries < 2 {
				return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
			}
			return nil
		}},
	})
	keeps := h.enqueue("keeps", "", queue.EnqueueOptions{MaxAttempts: 3})
	settles := h.enqueue("settles", "", queue.EnqueueOptions{MaxAttempts: 3})
	rec.waitCalls(t, settles, 3)
	rec.waitCalls(t, keeps, 3)
	ctx := context.Background()
	var task *queue.Task
	eventually(t, func() bool {
		var err error
		task, err = h.backend.Get(ctx, keeps)
		require.NoError(t, err)
		return task.HookRetries == 3
	}, "task %s was not given back a third time; last %+v", keeps, task)
	require.Equal(t, 4, task.Attempt, "two runs of the flow, two leases that ran the hooks again")

	assert.True(t, task.HooksDue, "it waits to run its hooks again")
	eventually(t, func() bool {
		task, err := h.backend.Get(ctx, settles)
		require.NoError(t, err)
		return task.Attempt == 4 && task.HookRetries == 2 && !task.HooksDue
	}, "task %s did not settle after two hook re-runs", settles)

	// Every view of a task counts the same runs: the listing's summary,
	// Get and the Inspector's (and so GET /tasks/{id}/'s) TaskInfo.
	in := h.inspector()
	list := listAll(t, in, queue.ListOptions{State: progress.StateSuccess})
	requireListed(t, []string{keeps, settles}, list, "both succeeded")
	for _, s := range list {
		assert.Equal(t, 2, s.Attempt, "task %s: the runs of the flow", s.ID)
		assert.Equal(t, 3, s.MaxAttempts, "task %s", s.ID)
		assert.Zero(t, s.HandBacks, "task %s", s.ID)
		got, err := h.backend.Get(ctx, s.ID)
		require.NoError(t, err)
		assert.Equal(t, s.Attempt, got.Attempts(), "task %s: Get and the listing", s.ID)
		info, err := in.Task(ctx, s.ID)
		require.NoError(t, err)
		require.NotNil(t, info.Task)
		assert.Equal(t, s.Attempt, info.Task.Attempts(), "task %s: TaskInfo and the listing", s.ID)
		assert.Equal(t, s.ID == keeps, info.Task.HooksDue, "task %s", s.ID)
	}
}

func testWorkerRegistry(t *testing.T, h *harness) {
	reg, ok := h.backend.(queue.WorkerRegistry)
	if !ok {
		t.Skipf("%T keeps no worker registry", h.backend)
	}
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	rw := h.start(queue.WorkerConfig{Name: "registry-worker", Concurrency: 3, Heartbeat: 20 * time.Millisecond, Lease: 9 * time.Second})
	var seen queue.WorkerInfo
	eventually(t, func() bool {
		list, err := reg.Workers(ctx)
		require.NoError(t, err)
		for _, w := range list {
			if w.Name == "registry-worker" && w.LastSeen.After(before) {
				seen = w
				return true
			}
		}
		return false
	}, "the worker did not write itself into the registry")
	assert.Equal(t, 3, seen.Slots)
	assert.Equal(t, 20*time.Millisecond, seen.Heartbeat)
	assert.Equal(t, 9*time.Second, seen.Lease)
	assert.NotZero(t, seen.PID)
	// Liveness is judged against the beat's own recorded time, not the
	// wall clock, so a stalled test process does not read as a dead worker.
	assert.True(t, seen.Alive(seen.LastSeen.Add(seen.DeadAfter())), "a worker is alive for DeadAfter past its last beat")
	assert.False(t, seen.Alive(seen.LastSeen.Add(seen.DeadAfter()+time.Millisecond)), "a worker is dead past DeadAfter of its last beat")
	first := seen.LastSeen
	eventually(t, func() bool {
		list, err := reg.Workers(ctx)
		require.NoError(t, err)
		return len(list) == 1 && list[0].LastSeen.After(first)
	}, "the worker did not beat again")

	rw.stop()
	list, err := reg.Workers(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "a worker that stopped leaves the registry")

	// A worker that stops beating without retiring stays, not alive.
	require.NoError(t, reg.Heartbeat(ctx, queue.WorkerInfo{Name: "ghost", Heartbeat: time.Millisecond, Slots: 1}))
	time.Sleep(10 * time.Millisecond)
	list, err = reg.Workers(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "ghost", list[0].Name)
	assert.False(t, list[0].Alive(time.Now()), "a worker silent for many beats is not alive")
}

func testCancelMatching(t *testing.T, h *harness) {
	h.declare("doomed", "spared")
	var target, other []string
	for range 5 {
		target = append(target, h.enqueue("doomed", "", queue.EnqueueOptions{}))
		other = append(other, h.enqueue("spared", "", queue.EnqueueOptions{}))
	}
	in := h.inspector()
	ctx := context.Background()
	res, err := in.CancelMatching(ctx, queue.CancelFilter{Flow: "doomed", State: progress.StatePending, Limit: 3})
	require.NoError(t, err)
	assert.Len(t, res.Cancelled, 3)
	assert.True(t, res.More, "two are left")
	res2, err := in.CancelMatching(ctx, queue.CancelFilter{Flow: "doomed"})
	require.NoError(t, err)
	assert.Len(t, res2.Cancelled, 2)
	assert.False(t, res2.More)
	assert.ElementsMatch(t, target, append(res.Cancelled, res2.Cancelled...))
	for _, id := range target {
		snap := h.snapshot(id)
		assert.Equal(t, progress.StateFailure, snap.State, "task %s", id)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
	}
	for _, id := range other {
		assert.Equal(t, progress.StatePending, h.snapshot(id).State, "task %s of another flow", id)
	}
	requireListed(t, target, listAll(t, in, queue.ListOptions{State: progress.StateFailure}), "cancelled tasks")
	none, err := in.CancelMatching(ctx, queue.CancelFilter{Flow: "doomed"})
	require.NoError(t, err)
	assert.Empty(t, none.Cancelled)
	assert.False(t, none.More)
}

// testCancelMatchingRunning: a running task asked to stop stays PROGRESS
// until its flow returns; a call made again from the start does not
// count it as cancelled again, but as already asked (AlreadyCancelled),
// and cancels only the tasks not asked yet. A pending task whose
// cancellation stopped before ending it is ended, as already asked.
func testCancelMatchingRunning(t *testing.T, h *harness) {
	h.declare("spared", "halfway")
	in := h.inspector()
	ctx := context.Background()

	// Before any worker runs: the backend's flag set, as a Cancel that
	// failed before it ended the task leaves it.
	halfway := h.enqueue("halfway", "", queue.EnqueueOptions{})
	require.NoError(t, h.backend.Cancel(ctx, halfway))
	require.Equal(t, progress.StatePending, h.snapshot(halfway).State)
	res, err := in.CancelMatching(ctx, queue.CancelFilter{Flow: "halfway"})
	require.NoError(t, err)
	assert.Empty(t, res.Cancelled, "the task was asked already")
	assert.Equal(t, []string{halfway}, res.AlreadyCancelled)
	snap := h.snapshot(halfway)
	assert.Equal(t, progress.StateFailure, snap.State, "the pending task asked before is ended now")
	assert.Equal(t, queue.StatusCancelled, snap.Details.Status)

	started, release := make(chan string, 4), make(chan struct{})
	h.reg.MustRegister("stubborn", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
		started <- task.ID
		<-release // deaf to its context's end until released: it stays running
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}))
	h.start(queue.WorkerConfig{Concurrency: 4, AbandonAfter: time.Hour})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the worker stops, should the test fail early
	running := func() string {
		id := h.enqueue("stubborn", "", queue.EnqueueOptions{})
		require.Equal(t, id, waitFor(t, started, "task "+id+" to start"))
		eventually(t, func() bool { return h.snapshot(id).State == progress.StateProgress }, "task %s running", id)
		return id
	}
	first := []string{running(), running()}
	later := h.enqueue("stubborn", "", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	spared := h.enqueue("spared", "", queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})

	res, err = in.CancelMatching(ctx, queue.CancelFilter{Flow: "stubborn"})
	require.NoError(t, err)
	assert.ElementsMatch(t, append([]string{later}, first...), res.Cancelled)
	assert.Empty(t, res.AlreadyCancelled)
	assert.False(t, res.More)
	assert.Equal(t, progress.StateFailure, h.snapshot(later).State, "the pending task ended at once")
	for _, id := range first {
		assert.Equal(t, progress.StateProgress, h.snapshot(id).State, "task %s runs until its flow returns", id)
	}

	for _, f := range []queue.CancelFilter{{Flow: "stubborn"}, {State: progress.StateProgress}, {Flow: "stubborn", Limit: 1}} {
		again, err := in.CancelMatching(ctx, f)
		require.NoError(t, err, "CancelMatching %+v", f)
		assert.Empty(t, again.Cancelled, "%+v: the running tasks were asked already", f)
		assert.ElementsMatch(t, first, again.AlreadyCancelled, "%+v", f)
		assert.False(t, again.More, "%+v", f)
	}

	// A task started since is cancelled; the others are not again.
	third := running()
	res, err = in.CancelMatching(ctx, queue.CancelFilter{State: progress.StateProgress})
	require.NoError(t, err)
	assert.Equal(t, []string{third}, res.Cancelled, "only the task not asked yet")
	assert.ElementsMatch(t, first, res.AlreadyCancelled)
	assert.False(t, res.More)
	assert.Equal(t, progress.StatePending, h.snapshot(spared).State, "a task of another flow")

	// Once their flows return, they are FAILURE, and nothing is left.
	free()
	for _, id := range append(first, third) {
		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State, "task %s", id)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status, "task %s", id)
	}
	res, err = in.CancelMatching(ctx, queue.CancelFilter{Flow: "stubborn"})
	require.NoError(t, err)
	assert.Equal(t, queue.CancelResult{Cancelled: []string{}}, res)
}

// cancelAll calls CancelMatching with f until it has no more to cancel,
// each call going on where the last stopped (CancelResult.Next), and
// returns the ids cancelled. Each call cancels at most f.Limit tasks.
func cancelAll(t *testing.T, in *queue.Inspector, f queue.CancelFilter) []string {
	t.Helper()
	var all []string
	for range 1000 {
		res, err := in.CancelMatching(context.Background(), f)
		require.NoError(t, err, "CancelMatching %+v", f)
		if f.Limit > 0 {
			require.LessOrEqual(t, len(res.Cancelled), f.Limit, "the call went over its limit")
		}
		all = append(all, res.Cancelled...)
		if !res.More {
			require.Empty(t, res.Next, "a call with none left has no Next")
			return all
		}
		require.NotEmpty(t, res.Next, "a call with more left says where to go on")
		require.NotEqual(t, f.Cursor, res.Next, "the cursor did not move")
		f.Cursor = res.Next
	}
	require.FailNow(t, "cancelling did not end")
	return nil
}

// testCancelMatchingOwner: cancelling by owner cancels every pending task
// of that owner, and no other, call after call, going on where the last
// call stopped, even when the owner's tasks are few among many others.
func testCancelMatchingOwner(t *testing.T, h *harness) {
	h.declare("doomed", "spared")
	var ada, adaSpared, others []string
	for i := range 60 {
		owner := "user:bob"
		switch i % 15 {
		case 0:
			owner = "user:ada"
		case 7:
			owner = "user:adam"
		}
		time.Sleep(time.Millisecond)
		id := h.enqueue("doomed", "", queue.EnqueueOptions{Owner: owner})
		if owner == "user:ada" {
			ada = append(ada, id)
		} else {
			others = append(others, id)
		}
		if i%20 == 5 {
			adaSpared = append(adaSpared, h.enqueue("spared", "", queue.EnqueueOptions{Owner: "user:ada"}))
		}
	}
	require.Len(t, ada, 4)
	in := h.inspector()
	got := cancelAll(t, in, queue.CancelFilter{Owner: "user:ada", Flow: "doomed", Limit: 1})
	assert.ElementsMatch(t, ada, got, "every task of ada in flow doomed, once")
	for _, id := range ada {
		assert.Equal(t, progress.StateFailure, h.snapshot(id).State, "task %s of ada", id)
	}
	for _, id := range append(slices.Clone(others), adaSpared...) {
		assert.Equal(t, progress.StatePending, h.snapshot(id).State, "task %s of another owner or flow", id)
	}
	none := cancelAll(t, in, queue.CancelFilter{Owner: "user:ada", Flow: "doomed"})
	assert.Empty(t, none, "nothing of ada's is left in flow doomed")
	spared := cancelAll(t, in, queue.CancelFilter{Owner: "user:ada", State: progress.StatePending, Limit: 2})
	assert.ElementsMatch(t, adaSpared, spared, "ada's tasks of the other flow")
	assert.Empty(t, cancelAll(t, in, queue.CancelFilter{Owner: "user:nobody", Limit: 3}))
}

// testCancelMatchingTimeRange: cancelling by time range cancels the
// pending tasks that entered their state (were enqueued) from Since,
// inclusive, to Until, exclusive, as a listing with that range lists
// them, alone and with an owner.
func testCancelMatchingTimeRange(t *testing.T, h *harness) {
	h.declare("doomed")
	for i := range 8 {
		owner := ""
		if i%2 == 0 {
			owner = "user:ada"
		}
		time.Sleep(2 * time.Millisecond)
		h.enqueue("doomed", "", queue.EnqueueOptions{Owner: owner})
	}
	in := h.inspector()
	all := listAll(t, in, queue.ListOptions{State: progress.StatePending})
	require.Len(t, all, 8)
	at := func(i int) time.Time { return all[i].ChangedAt().Truncate(time.Millisecond) }
	// want lists the pending tasks of all that o selects.
	want := func(o queue.ListOptions) []string {
		var out []string
		for _, s := range all {
			if h.snapshot(s.ID).State == progress.StatePending && o.Match(&s) {
				out = append(out, s.ID)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    queue.CancelFilter
		n    int
	}{
		{"tomorrow on", queue.CancelFilter{Since: time.Now().Add(24 * time.Hour)}, 0},
		{"before 1971", queue.CancelFilter{Until: time.Unix(365*24*3600, 0)}, 0},
		{"empty range", queue.CancelFilter{Since: at(3), Until: at(3)}, 0},
		{"owner, from the seventh to the third", queue.CancelFilter{Owner: "user:ada", Since: at(6), Until: at(2), Limit: 1}, 2},
		{"from the sixth to the second", queue.CancelFilter{Since: at(5), Until: at(1), Limit: 1}, 2},
		{"until the newest", queue.CancelFilter{Until: at(0), Limit: 2}, 3},
		{"since the newest", queue.CancelFilter{Since: at(0)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := want(queue.ListOptions{Owner: tc.f.Owner, Since: tc.f.Since, Until: tc.f.Until})
			require.Len(t, w, tc.n, "the case cuts through the tasks as meant")
			got := cancelAll(t, in, tc.f)
			assert.ElementsMatch(t, w, got)
			for _, id := range got {
				assert.Equal(t, progress.StateFailure, h.snapshot(id).State, "task %s", id)
			}
		})
	}
	left := listAll(t, in, queue.ListOptions{State: progress.StatePending})
	assert.Empty(t, left, "the cases cancelled every task, each once")
}

func testInspectorDead(t *testing.T, h *harness) {
	ids, release := h.mixedTasks()
	release()
	in := h.inspector()
	ctx := context.Background()
	dead, err := in.Dead(ctx, 0)
	require.NoError(t, err)
	var deadIDs []string
	for _, d := range dead {
		deadIDs = append(deadIDs, d.ID)
	}
	assert.ElementsMatch(t, ids["bad"], deadIDs)
	newID, err := in.Requeue(ctx, ids["bad"][0])
	require.NoError(t, err)
	snap := h.waitTerminal(newID)
	assert.Equal(t, progress.StateFailure, snap.State)
	page, err := in.List(ctx, queue.ListOptions{Flow: "bad", Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 1)
	assert.Equal(t, newID, page.Tasks[0].ID, "the re-queued task ended last")
	assert.Equal(t, ids["bad"][0], page.Tasks[0].RequeuedFrom)
}

// listPages lists every page of o like listAll, and checks each page: at
// most o.Limit tasks, each one that o selects. A page may hold fewer
// tasks than the limit, even none, and still have a next one.
func listPages(t *testing.T, in *queue.Inspector, o queue.ListOptions) []queue.TaskSummary {
	t.Helper()
	var all []queue.TaskSummary
	for range 1000 {
		page, err := in.List(context.Background(), o)
		require.NoError(t, err, "List %+v", o)
		require.LessOrEqual(t, len(page.Tasks), o.Limit, "the page is over its limit")
		for _, s := range page.Tasks {
			require.True(t, o.Match(&s), "List %+v listed %+v", o, s)
		}
		all = append(all, page.Tasks...)
		if page.Next == "" {
			return all
		}
		require.NotEqual(t, o.Cursor, page.Next, "the cursor did not move")
		o.Cursor = page.Next
	}
	require.FailNow(t, "listing did not end")
	return nil
}

// testListOwner: a listing by owner lists every task of that owner and
// no other, page after page, whatever the page size, among many tasks of
// other owners.
func testListOwner(t *testing.T, h *harness) {
	h.declare("owned", "other")
	owners := map[string][]string{}
	var every []string
	for i := range 40 {
		owner := ""
		switch i % 10 {
		case 3:
			owner = "user:ada"
		case 7:
			owner = "user:bob"
		case 9:
			owner = "user:adam"
		}
		time.Sleep(time.Millisecond)
		id := h.enqueue("owned", "", queue.EnqueueOptions{Owner: owner})
		owners[owner] = append(owners[owner], id)
		every = append(every, id)
	}
	otherID := h.enqueue("other", "", queue.EnqueueOptions{Owner: "user:bob"})
	in := h.inspector()
	for _, limit := range []int{1, 2, 3, 50} {
		for _, tc := range []struct {
			name string
			o    queue.ListOptions
			want []string
		}{
			{"ada", queue.ListOptions{Owner: "user:ada"}, owners["user:ada"]},
			{"adam", queue.ListOptions{Owner: "user:adam"}, owners["user:adam"]},
			{"bob", queue.ListOptions{Owner: "user:bob"}, append(slices.Clone(owners["user:bob"]), otherID)},
			{"bob, flow owned", queue.ListOptions{Owner: "user:bob", Flow: "owned"}, owners["user:bob"]},
			{"bob, flow other", queue.ListOptions{Owner: "user:bob", Flow: "other"}, []string{otherID}},
			{"ada, PENDING", queue.ListOptions{Owner: "user:ada", State: progress.StatePending}, owners["user:ada"]},
			{"ada, SUCCESS", queue.ListOptions{Owner: "user:ada", State: progress.StateSuccess}, nil},
			{"nobody", queue.ListOptions{Owner: "user:nobody"}, nil},
			{"no owner filter", queue.ListOptions{Flow: "owned"}, every},
		} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				tc.o.Limit = limit
				requireListed(t, tc.want, listPages(t, in, tc.o), tc.name)
			})
		}
	}
}

// testListTimeRange: a listing by time range lists the tasks that
// entered their current state (TaskSummary.ChangedAt; a finished task,
// when it ended) from Since, inclusive, to Until, exclusive, to the
// millisecond, in every state, alone and with the other filters.
func testListTimeRange(t *testing.T, h *harness) {
	ids, release := h.mixedTasks()
	defer release()
	in := h.inspector()
	all := listAll(t, in, queue.ListOptions{})
	require.Len(t, all, 8)
	at := func(i int) time.Time { return all[i].ChangedAt().Truncate(time.Millisecond) }
	// want lists the tasks of all that o selects, by their summaries.
	want := func(o queue.ListOptions) []string {
		var out []string
		for _, s := range all {
			if o.Match(&s) {
				out = append(out, s.ID)
			}
		}
		return out
	}
	newest, oldest := at(0), at(len(all)-1)
	cases := []struct {
		name string
		o    queue.ListOptions
	}{
		{"since the fourth", queue.ListOptions{Since: at(3)}},
		{"until the fourth", queue.ListOptions{Until: at(3)}},
		{"from the sixth to the second", queue.ListOptions{Since: at(5), Until: at(1)}},
		{"since the oldest", queue.ListOptions{Since: oldest}},
		{"until just after the newest", queue.ListOptions{Until: newest.Add(time.Millisecond)}},
		{"until the newest", queue.ListOptions{Until: newest}},
		{"since just after the newest", queue.ListOptions{Since: newest.Add(time.Millisecond)}},
		{"until the oldest", queue.ListOptions{Until: oldest}},
		{"empty range", queue.ListOptions{Since: at(3), Until: at(3)}},
		{"sub-millisecond bounds", queue.ListOptions{Since: at(5).Add(999 * time.Microsecond), Until: at(1).Add(time.Microsecond)}},
		{"SUCCESS since the oldest ok", queue.ListOptions{State: progress.StateSuccess, Since: at(7)}},
		{"FAILURE until the newest", queue.ListOptions{State: progress.StateFailure, Until: newest}},
		{"PENDING since the oldest", queue.ListOptions{State: progress.StatePending, Since: oldest}},
		{"flow ok, range", queue.ListOptions{Flow: "ok", Since: at(7), Until: at(5)}},
		{"owner, range", queue.ListOptions{Owner: "user:ada", Since: oldest, Until: at(4)}},
		{"an hour ago to now", queue.ListOptions{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Minute)}},
		{"tomorrow", queue.ListOptions{Since: time.Now().Add(24 * time.Hour)}},
		{"before 1971", queue.ListOptions{Until: time.Unix(365*24*3600, 0)}},
	}
	for _, tc := range cases {
		for _, limit := range []int{1, 3, 100} {
			t.Run(fmt.Sprintf("%s/limit %d", tc.name, limit), func(t *testing.T) {
				o := tc.o
				o.Limit = limit
				requireListed(t, want(o), listPages(t, in, o), tc.name)
			})
		}
	}
	// The bounds' meaning, which the cases above rely on. Tasks may
	// share a millisecond, so the counts go by the times listed.
	newestToo := 0 // the tasks that share the newest one's time
	for i := range all {
		if at(i).Equal(newest) {
			newestToo++
		}
	}
	assert.Len(t, want(queue.ListOptions{Until: newest}), len(all)-newestToo, "Until is exclusive")
	assert.Len(t, want(queue.ListOptions{Since: oldest}), len(all), "Since is inclusive")
	assert.NotEmpty(t, ids["later"])
}

// testHooksWaiting checks how a task is shown whose terminal state is
// recorded but whose finish hooks wait to run again (queue.ErrRetryHooks):
// in its terminal state in the listing and the counts, and in the depth
// apart, as HooksWaiting, not as Delayed: no run of its flow waits.
func testHooksWaiting(t *testing.T, h *harness) {
	h.registerCounting("once")
	h.reg.MustRegister("boom", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, flow.Permanent(errors.New("broken"))
	}))
	rec := newFinishes(h)
	h.start(queue.WorkerConfig{
		Concurrency: 2, Backoff: func(int) time.Duration { return time.Hour },
		OnFinish: []queue.FinishHook{rec.hook, func(context.Context, queue.Finished) error {
			return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
		}},
	})
	ok := h.enqueue("once", "", queue.EnqueueOptions{})
	boom := h.enqueue("boom", "", queue.EnqueueOptions{})
	rec.waitCalls(t, ok, 1)
	rec.waitCalls(t, boom, 1)
	in := h.inspector()
	ctx := context.Background()
	counts := queue.StateCounts{Success: 1, Failure: 1}
	var st queue.Stats
	eventually(t, func() bool {
		var err error
		st, err = in.Stats(ctx)
		require.NoError(t, err)
		return st.Running == 0 && st.Counts == counts
	}, "both tasks given back for their hooks; last %+v", &st)
	assert.Equal(t, int64(0), st.Delayed, "no run of a flow waits")
	assert.Equal(t, int64(2), st.HooksWaiting, "the two ended tasks wait to run their hooks again")
	assert.Equal(t, int64(0), st.Ready)
	assert.Equal(t, []queue.FlowCounts{
		{Flow: "boom", Counts: queue.StateCounts{Failure: 1}},
		{Flow: "once", Counts: queue.StateCounts{Success: 1}},
	}, st.Flows)
	if d, ok := h.backend.(queue.DepthReader); ok {
		depth, err := d.Depth(ctx)
		require.NoError(t, err)
		assert.Equal(t, queue.Depth{HooksWaiting: 2}, depth, "Depth counts as Stats does")
	}
	for _, tc := range []struct {
		id    string
		state progress.State
	}{{ok, progress.StateSuccess}, {boom, progress.StateFailure}} {
		list := listAll(t, in, queue.ListOptions{State: tc.state})
		requireListed(t, []string{tc.id}, list, string(tc.state))
		assert.Equal(t, 1, list[0].Attempt, "the run of the flow")
	}
	requireListed(t, nil, listAll(t, in, queue.ListOptions{State: progress.StateProgress}), "nothing in PROGRESS")
	requireListed(t, nil, listAll(t, in, queue.ListOptions{State: progress.StatePending}), "nothing PENDING")
}
