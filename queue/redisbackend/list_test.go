package redisbackend_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// pageAll lists every page of o and returns the ids in order.
func pageAll(t testing.TB, b *redisbackend.Backend, o queue.ListOptions) []string {
	t.Helper()
	var ids []string
	for range 100000 {
		page, err := b.ListTasks(context.Background(), o)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Tasks), o.Limit)
		for _, s := range page.Tasks {
			ids = append(ids, s.ID)
		}
		if page.Next == "" {
			return ids
		}
		o.Cursor = page.Next
	}
	require.FailNow(t, "the listing did not end")
	return nil
}

// TestListTasksPagesThroughTies lists tasks that entered their states in
// the same millisecond, more of them than a page holds: every page goes on
// after the last task of the one before, by id, and every task comes
// once.
func TestListTasksPagesThroughTies(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	require.NoError(t, redisbackend.BulkLoad(ctx, b, 300, []string{"a", "b"}, time.Now(), 0))
	for _, o := range []queue.ListOptions{
		{Limit: 7},
		{Limit: 1},
		{Limit: 1000},
		{State: progress.StateSuccess, Limit: 13},
		{Flow: "b", Limit: 5},
		{Flow: "a", State: progress.StateFailure, Limit: 2},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			got := pageAll(t, b, o)
			whole, err := b.ListTasks(ctx, queue.ListOptions{State: o.State, Flow: o.Flow, Limit: queue.MaxListLimit})
			require.NoError(t, err)
			var want []string
			for _, s := range whole.Tasks {
				want = append(want, s.ID)
			}
			require.NotEmpty(t, want)
			assert.Equal(t, want, got, "pages of %d", o.Limit)
			// Within a millisecond, by id, greatest first: the
			// succeeded and failed tasks of the load ended in one.
			var ended []string
			for _, s := range whole.Tasks {
				if s.State.Terminal() {
					ended = append(ended, s.ID)
				}
			}
			assert.True(t, slices.IsSortedFunc(ended, func(a, b string) int { return strings.Compare(b, a) }))
		})
	}
}

// TestListTasksByOwnerReadsABoundedPage lists the tasks of one owner
// among many of others: each page reads at most four times its limit of
// index members, so some pages hold fewer tasks than the limit, or none,
// with a next cursor, and the pages together hold every task of the
// owner, newest first, and no other.
func TestListTasksByOwnerReadsABoundedPage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	start := time.Now().Add(-time.Hour)
	require.NoError(t, redisbackend.BulkLoad(ctx, b, 200, []string{"a", "b"}, start, time.Millisecond))
	all := pageAll(t, b, queue.ListOptions{Limit: queue.MaxListLimit})
	require.Len(t, all, 200)
	for _, o := range []queue.ListOptions{
		{Limit: 1}, {Limit: 5}, {Limit: 50}, {Flow: "b", Limit: 3}, {State: progress.StateSuccess, Limit: 7},
		{Limit: 2, Since: start.Add(50 * time.Millisecond), Until: start.Add(150 * time.Millisecond)},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			whole, err := b.ListTasks(ctx, queue.ListOptions{Flow: o.Flow, State: o.State, Since: o.Since, Until: o.Until, Limit: queue.MaxListLimit})
			require.NoError(t, err)
			var want []string
			for _, s := range whole.Tasks {
				if s.Owner == "user:ada" {
					want = append(want, s.ID)
				}
			}
			require.NotEmpty(t, want)
			o.Owner = "user:ada"
			var got []string
			short := 0
			for pages := 0; ; pages++ {
				require.Less(t, pages, 1000, "the listing does not end")
				page, err := b.ListTasks(ctx, o)
				require.NoError(t, err)
				require.LessOrEqual(t, len(page.Tasks), o.Limit)
				for _, s := range page.Tasks {
					require.Equal(t, "user:ada", s.Owner, "%+v", s)
					got = append(got, s.ID)
				}
				if page.Next == "" {
					break
				}
				if len(page.Tasks) < o.Limit {
					short++
				}
				o.Cursor = page.Next
			}
			assert.Equal(t, want, got, "every task of the owner, once, newest first")
			if o.Limit == 1 {
				assert.Positive(t, short, "a page read four members, none of them the owner's, and went on")
			}
		})
	}
}

// TestCancelMatchingByOwnerReadsBoundedPages cancels the one pending
// task of an owner beneath many of another: the index has no owner, so a
// call reads a bounded number of pages and stops before it meets the
// task, with nothing cancelled, More and a Next; the calls that go on
// from each Next reach it and cancel it, and nothing else.
func TestCancelMatchingByOwnerReadsBoundedPages(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
	ada, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Owner: "user:ada"})
	require.NoError(t, err)
	for range 200 {
		_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Owner: "user:bob"})
		require.NoError(t, err)
	}
	in := queue.NewInspector(b, nil, queue.InspectorConfig{})
	f := queue.CancelFilter{Owner: "user:ada", Limit: 1}
	res, err := in.CancelMatching(ctx, f)
	require.NoError(t, err)
	assert.Empty(t, res.Cancelled, "the first call read less than the 200 newer tasks")
	require.True(t, res.More)
	require.NotEmpty(t, res.Next)
	var cancelled []string
	calls := 1
	for res.More {
		require.Less(t, calls, 100, "cancelling does not end")
		f.Cursor = res.Next
		res, err = in.CancelMatching(ctx, f)
		require.NoError(t, err)
		cancelled = append(cancelled, res.Cancelled...)
		calls++
	}
	assert.Equal(t, []string{ada}, cancelled)
	assert.Greater(t, calls, 2, "each call read a bounded number of tasks")
	page, err := b.ListTasks(ctx, queue.ListOptions{State: progress.StatePending, Limit: queue.MaxListLimit})
	require.NoError(t, err)
	assert.Len(t, page.Tasks, 200, "bob's tasks are left")
}

// TestListTasksRepairsTheIndex checks that a listing removes the index
// entries of tasks that are gone and moves those whose state changed
// behind the index's back, then lists what is true.
func TestListTasksRepairsTheIndex(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: flowsNamed("f")})
	var ids []string
	for range 3 {
		id, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		ids = append(ids, id)
	}
	// Gone: its keys deleted (expired, say). Moved: appended to without
	// the flow (the index of the flow is not told).
	require.NoError(t, srv.Do("DEL", b.Prefix()+":{"+ids[0]+"}:task").Error())
	_, err := b.Append(ctx, ids[1], progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "stopped"})
	require.NoError(t, err)

	page, err := b.ListTasks(ctx, queue.ListOptions{Flow: "f", State: progress.StatePending, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 1)
	assert.Equal(t, ids[2], page.Tasks[0].ID)
	page, err = b.ListTasks(ctx, queue.ListOptions{Flow: "f", State: progress.StateFailure, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 1, "the flow's index was repaired")
	assert.Equal(t, ids[1], page.Tasks[0].ID)
	n, err := srv.Do("ZCARD", b.Prefix()+":{q:default}:index:f").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(2), n, "the gone task left the flow's index")

	// Gone, and met by a listing of every flow: it leaves its flow's
	// index too.
	require.NoError(t, srv.Do("DEL", b.Prefix()+":{"+ids[2]+"}:task").Error())
	page, err = b.ListTasks(ctx, queue.ListOptions{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 1)
	n, err = srv.Do("ZCARD", b.Prefix()+":{q:default}:index:f").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "a gone task met by a listing of every flow left its flow's index")
	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, []queue.FlowCounts{{Flow: "f", Counts: queue.StateCounts{Failure: 1}}}, st.Flows)
}

// BenchmarkListTasks lists a page of 100 tasks out of 1,000 and out of
// 1,000,000 (loaded by BulkLoad, not run), newest first and from the
// middle of the listing, with and without filters (state, flow, time
// range, owner), and reports the Redis commands per page (INFO
// commandstats). A page costs the same at both sizes: one ZRANGE per
// state the filter selects and one HMGET per task listed (per member
// read, for an owner: four times the limit).
//
//	go test -run '^$' -bench BenchmarkListTasks -benchtime 200x ./queue/redisbackend/
func BenchmarkListTasks(b *testing.B) {
	srv := redistest.Start(b)
	client := newClient(b, srv)
	ctx := context.Background()
	flows := []string{"poem", "search", "summary", "translate", "notify"}
	start := time.Now().Add(-3 * time.Hour)
	for _, n := range []int{1000, 1_000_000} {
		backend := newBackend(b, client, redisbackend.Config{})
		loaded := time.Now()
		require.NoError(b, redisbackend.BulkLoad(ctx, backend, n, flows, start, time.Millisecond))
		b.Logf("%d tasks loaded in %v", n, time.Since(loaded).Round(time.Millisecond))
		// The cursor of the task in the middle of the listing.
		middle := queue.Cursor{At: start.Add(time.Duration(n/2) * time.Millisecond).Add(20 * time.Millisecond), ID: fmt.Sprintf("%032x", n/2)}
		for _, q := range []struct {
			name string
			o    queue.ListOptions
		}{
			{"all", queue.ListOptions{}},
			{"all/middle", queue.ListOptions{Cursor: middle.String()}},
			{"state=SUCCESS", queue.ListOptions{State: progress.StateSuccess}},
			{"state=SUCCESS/middle", queue.ListOptions{State: progress.StateSuccess, Cursor: middle.String()}},
			{"flow=poem", queue.ListOptions{Flow: "poem"}},
			{"flow=poem,state=FAILURE", queue.ListOptions{Flow: "poem", State: progress.StateFailure}},
			// The middle half of the load's time span.
			{"since,until", queue.ListOptions{Since: start.Add(time.Duration(n/4) * time.Millisecond), Until: start.Add(time.Duration(3*n/4) * time.Millisecond)}},
			{"state=SUCCESS,since,until/middle", queue.ListOptions{State: progress.StateSuccess,
				Since: start.Add(time.Duration(n/4) * time.Millisecond), Until: start.Add(time.Duration(3*n/4) * time.Millisecond), Cursor: middle.String()}},
			// A third of the tasks are ada's: a page reads 400 members.
			{"owner=user:ada", queue.ListOptions{Owner: "user:ada"}},
		} {
			q.o.Limit = 100
			b.Run(fmt.Sprintf("tasks=%d/%s", n, q.name), func(b *testing.B) {
				require.NoError(b, srv.Do("CONFIG", "RESETSTAT").Error())
				listed := 0
				for b.Loop() {
					page, err := backend.ListTasks(ctx, q.o)
					if err != nil {
						b.Fatal(err)
					}
					listed += len(page.Tasks)
				}
				calls := 0
				for name, c := range commandCalls(b, srv) {
					if name != "config|resetstat" {
						calls += c
					}
				}
				b.ReportMetric(float64(calls)/float64(b.N), "cmds/page")
				b.ReportMetric(float64(listed)/float64(b.N), "tasks/page")
			})
		}
	}
}
