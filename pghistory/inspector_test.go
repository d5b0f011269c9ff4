package pghistory_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// TestListHistory: the Store as a queue.History lists the tasks that
// ended before q.Before, as summaries, with cursor paging, and refuses
// bad queries with queue.ErrInvalidQuery.
func TestListHistory(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		r := record(i)
		r.Owner = "alice"
		if i == 3 {
			r.Attempts, r.HandBacks = 2, 1
		}
		if i == 2 {
			r.State, r.Status = progress.StateFailure, queue.StatusCancelled
		}
		require.NoError(t, s.Save(ctx, r))
		ids = append(ids, r.TaskID)
	}
	var got []queue.TaskSummary
	q := queue.HistoryQuery{Before: t0.Add(4 * time.Second), Limit: 3}
	for {
		page, err := s.ListHistory(ctx, q)
		require.NoError(t, err)
		got = append(got, page.Tasks...)
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	require.Len(t, got, 4, "the task that ended at Before is left out")
	for i, sum := range got {
		assert.Equal(t, ids[3-i], sum.ID, "newest first")
		assert.Equal(t, "poem_flow", sum.Flow)
		assert.Equal(t, "alice", sum.Owner)
		assert.Equal(t, 3, sum.MaxAttempts)
		assert.True(t, t0.Add(time.Duration(3-i)*time.Second).Equal(sum.EndedAt))
		assert.Equal(t, sum.EndedAt, sum.ChangedAt())
	}
	assert.Equal(t, 2, got[0].Attempt, "the history's attempts")
	assert.Equal(t, 1, got[0].HandBacks, "and hand-backs")
	assert.Equal(t, 4, got[0].Runs())
	for _, sum := range got[1:] {
		assert.Equal(t, 1, sum.Attempt)
		assert.Zero(t, sum.HandBacks)
	}
	assert.True(t, got[1].Cancelled, "a cancelled task is marked so")
	assert.Equal(t, progress.StateFailure, got[1].State)
	assert.Equal(t, 100, got[0].Progress)

	failures, err := s.ListHistory(ctx, queue.HistoryQuery{State: progress.StateFailure, Before: t0.Add(time.Hour), Limit: 10})
	require.NoError(t, err)
	require.Len(t, failures.Tasks, 1)
	assert.Equal(t, ids[2], failures.Tasks[0].ID)

	// By owner and time range: Since inclusive, Until exclusive, and
	// Before still bounds the listing.
	for i := 5; i < 8; i++ {
		r := record(i)
		r.Owner = "bob"
		require.NoError(t, s.Save(ctx, r))
		ids = append(ids, r.TaskID)
	}
	for _, tc := range []struct {
		name string
		q    queue.HistoryQuery
		want []string
	}{
		{"alice", queue.HistoryQuery{Owner: "alice"}, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"bob", queue.HistoryQuery{Owner: "bob"}, []string{ids[7], ids[6], ids[5]}},
		{"nobody", queue.HistoryQuery{Owner: "al"}, nil},
		{"since", queue.HistoryQuery{Since: t0.Add(3 * time.Second)}, []string{ids[7], ids[6], ids[5], ids[4], ids[3]}},
		{"until", queue.HistoryQuery{Until: t0.Add(2 * time.Second)}, []string{ids[1], ids[0]}},
		{"since, until", queue.HistoryQuery{Since: t0.Add(2 * time.Second), Until: t0.Add(6 * time.Second)}, []string{ids[5], ids[4], ids[3], ids[2]}},
		{"bob, since", queue.HistoryQuery{Owner: "bob", Since: t0.Add(6 * time.Second)}, []string{ids[7], ids[6]}},
		{"until after before", queue.HistoryQuery{Until: t0.Add(time.Hour), Before: t0.Add(time.Second)}, []string{ids[0]}},
		{"until before before", queue.HistoryQuery{Until: t0.Add(time.Second), Before: t0.Add(time.Hour)}, []string{ids[0]}},
		{"empty range", queue.HistoryQuery{Since: t0.Add(time.Second), Until: t0.Add(time.Second)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			if q.Before.IsZero() {
				q.Before = t0.Add(time.Hour)
			}
			q.Limit = 2
			var got []string
			for range 10 {
				page, err := s.ListHistory(ctx, q)
				require.NoError(t, err)
				for _, sum := range page.Tasks {
					got = append(got, sum.ID)
				}
				if page.Next == "" {
					break
				}
				q.Cursor = page.Next
			}
			assert.Equal(t, tc.want, got)
		})
	}

	for _, bad := range []queue.HistoryQuery{
		{Before: t0, Limit: 1, Since: t0.Add(time.Second), Until: t0},
		{Before: t0, Limit: 0},
		{Before: t0, Limit: queue.MaxListLimit + 1},
		{Before: t0, Limit: 1, State: progress.StatePending},
		{Before: t0, Limit: 1, Cursor: "not a cursor"},
	} {
		_, err := s.ListHistory(ctx, bad)
		assert.ErrorIs(t, err, queue.ErrInvalidQuery, "%+v", bad)
	}
}

// TestInspectorListsPastRetention: a queue.Inspector with the Store as
// its History lists the tasks the backend holds, then, once the backend
// has no more, those it has dropped at the end of their retention, from
// PostgreSQL: every task once, newest first.
func TestInspectorListsPastRetention(t *testing.T) {
	s, _ := open(t)
	const retention = 300 * time.Millisecond
	backend := queue.NewMemory(queue.MemoryConfig{Retention: retention})
	store := progress.NewMemoryStore(progress.MemoryConfig{Retention: retention})
	broker := runWorker(t, backend, store, s)
	ctx := context.Background()
	inspector := queue.NewInspector(backend, store, queue.InspectorConfig{History: s})

	run := func() string {
		t.Helper()
		id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		waitRow(t, s, id)
		return id
	}
	var old []string
	for range 3 {
		old = append(old, run())
	}
	// The backend forgets them.
	require.Eventually(t, func() bool {
		_, err := broker.Task(ctx, old[0])
		return err != nil
	}, 10*time.Second, 20*time.Millisecond)
	// The store forgets on its own clock; a listing reads both.
	time.Sleep(2 * retention)
	var recent []string
	for range 2 {
		recent = append(recent, run())
	}

	var got []string
	o := queue.ListOptions{Limit: 2}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 20, "the listing does not end")
		page, err := inspector.List(ctx, o)
		require.NoError(t, err)
		for _, task := range page.Tasks {
			got = append(got, task.ID)
		}
		if page.Next == "" {
			break
		}
		o.Cursor = page.Next
	}
	want := []string{recent[1], recent[0], old[2], old[1], old[0]}
	assert.Equal(t, want, got, "the backend's tasks, then the history's")
}

// TestInspectorListsPastRetentionBesideALongRun: a task that runs longer
// than the backend's retention does not hide the history of the tasks
// that ended while it ran: it is listed at its start, after the tasks
// of the history that ended since, and every task is listed once.
func TestInspectorListsPastRetentionBesideALongRun(t *testing.T) {
	s, _ := open(t)
	// The two recent tasks must stay in the backend from the end of the
	// first to the end of the listing (a run, a row written and polled
	// for, a listing of four pages): one that left it would be listed
	// from the history, after the long run. 300 ms, which a loaded
	// machine may take, left too little room.
	const retention = time.Second
	backend := queue.NewMemory(queue.MemoryConfig{Retention: retention})
	store := progress.NewMemoryStore(progress.MemoryConfig{Retention: retention})
	reg := testFlows()
	release := make(chan struct{})
	reg.MustRegister("long", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		for {
			select {
			case <-release:
				return "done", nil
			case <-time.After(retention / 6):
				ft.Progress.Log("still at it") // keeps its record in the store
			}
		}
	}))
	startWorker(t, backend, store, queue.WorkerConfig{Registry: reg, Name: "history-worker", OnFinish: []queue.FinishHook{s.Hook}})
	t.Cleanup(func() { close(release) })
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
	ctx := context.Background()
	inspector := queue.NewInspector(backend, store, queue.InspectorConfig{History: s})

	long, err := broker.Enqueue(ctx, "long", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := broker.Task(ctx, long)
		return err == nil && info.Snapshot.State == progress.StateProgress
	}, 10*time.Second, 5*time.Millisecond)
	time.Sleep(5 * time.Millisecond) // the others end in a later millisecond
	run := func() string {
		t.Helper()
		id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		waitRow(t, s, id)
		return id
	}
	var old []string
	for range 3 {
		old = append(old, run())
	}
	require.Eventually(t, func() bool {
		_, err := broker.Task(ctx, old[2])
		return err != nil
	}, 10*time.Second, 20*time.Millisecond, "the backend forgets the tasks that ended")
	time.Sleep(2 * retention)
	var recent []string
	for range 2 {
		recent = append(recent, run())
	}
	_, err = broker.Task(ctx, long)
	require.NoError(t, err, "the long run is still in the backend")

	var got []string
	o := queue.ListOptions{Limit: 2}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 20, "the listing does not end")
		page, err := inspector.List(ctx, o)
		require.NoError(t, err)
		for _, task := range page.Tasks {
			got = append(got, task.ID)
		}
		if page.Next == "" {
			break
		}
		o.Cursor = page.Next
	}
	want := []string{recent[1], recent[0], old[2], old[1], old[0], long}
	assert.Equal(t, want, got, "newest first: the long run at its start, after the history's tasks that ended since")
}

// TestInspectorEmptyHistoryPage: a page that neither the backend nor the
// history has a task for is an empty list, {"tasks": []} as GET /tasks/
// writes it, not null; and a page that the backend's tasks fill exactly,
// with none older in the history, is the last: it has no next cursor.
func TestInspectorEmptyHistoryPage(t *testing.T) {
	s, _ := open(t)
	backend, store := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: testFlows()})
	ctx := context.Background()
	for range 2 {
		_, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
	}
	inspector := queue.NewInspector(backend, store, queue.InspectorConfig{History: s})
	page, err := inspector.List(ctx, queue.ListOptions{Limit: 2})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 2)
	assert.Empty(t, page.Next, "nothing older, in the backend or the history")

	page, err = inspector.List(ctx, queue.ListOptions{Limit: 2, Flow: "fails"})
	require.NoError(t, err)
	assert.Empty(t, page.Next)
	b, err := json.Marshal(page)
	require.NoError(t, err)
	assert.JSONEq(t, `{"tasks": []}`, string(b))
}
