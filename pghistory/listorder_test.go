package pghistory_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestMergedListingOrder pages through a listing of Redis and the history
// whose tasks end in bursts, many in one millisecond, and that Redis has
// partly forgotten: a task's keys expire at a time set when it was
// created or last written (the retention and up to an eighth more), not
// in the order the tasks ended, so that around the oldest task Redis
// still holds are tasks it holds and tasks only the history has, some
// in the same millisecond. The history also has rows written with the
// worker's clock (RecordOf without the snapshot's times), to the
// microsecond. Whatever the page size, every task comes exactly once,
// newest first to the millisecond, then by id, greatest first: the order
// of queue.TaskPage, and of each page's cursor.
func TestMergedListingOrder(t *testing.T) {
	s, _ := open(t)
	client := redistest.Start(t).Client(t)
	backend, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	reg := testFlows()
	broker := queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: reg})
	ctx := context.Background()

	// Tasks that end in bursts of 40 at once: many end in the same
	// millisecond. Each has its row, written as the history's hook
	// writes it, from the task's final snapshot. The boundary is the
	// fullest millisecond of the first burst after the first that has
	// one of three tasks or more (on a loaded machine a burst may
	// spread); two bursts end after it.
	const perBurst = 40
	var (
		ids      []string
		ended    = map[string]time.Time{}
		byMilli  = map[int64][]string{}
		boundary int64
		after    int // bursts ended after the boundary's
	)
	for bursts := 0; after < 2; bursts++ {
		require.Less(t, bursts, 20, "no burst ended three tasks in one millisecond: %v", byMilli)
		burst := make([]string, perBurst)
		for i := range burst {
			burst[i], err = broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
		}
		var wg sync.WaitGroup
		for _, id := range burst {
			wg.Go(func() {
				_, err := backend.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed"})
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		mine := map[int64]int{}
		for _, id := range burst {
			info, err := broker.Task(ctx, id)
			require.NoError(t, err)
			require.Equal(t, progress.StateSuccess, info.Snapshot.State)
			require.NoError(t, s.Save(ctx, pghistory.RecordOf(queue.Finished{Task: info.Task, Snapshot: info.Snapshot})))
			ended[id] = info.Snapshot.EndedAt
			ms := info.Snapshot.EndedAt.UnixMilli()
			byMilli[ms] = append(byMilli[ms], id)
			mine[ms]++
		}
		ids = append(ids, burst...)
		switch {
		case boundary != 0:
			after++
		case bursts > 0:
			for ms, n := range mine {
				if n >= 3 && n > mine[boundary] {
					boundary = ms
				}
			}
		}
		// The next burst ends in a later millisecond.
		last := time.Now()
		require.Eventually(t, func() bool { return time.Now().UnixMilli() > last.UnixMilli()+1 }, time.Second, 100*time.Microsecond)
	}
	// Redis forgets every task that ended before the boundary, every
	// other task of it (by id), and every third task after it.
	in := slices.Clone(byMilli[boundary])
	slices.Sort(in)
	forget := map[string]bool{}
	for i, id := range in {
		forget[id] = i%2 == 0 // the smallest id of the millisecond, then every other one
	}
	for i, id := range ids {
		switch ms := ended[id].UnixMilli(); {
		case ms < boundary:
			forget[id] = true
		case ms > boundary:
			forget[id] = i%3 == 0
		}
	}
	for id, gone := range forget {
		if gone {
			forgetTask(t, client, id)
		}
	}
	// Rows of tasks Redis never held, written with the worker's clock:
	// microseconds into the boundary millisecond and the one before.
	for i := range 6 {
		r := record(0)
		r.Flow = "ok"
		r.Snapshot.EndedAt, r.Snapshot.StartedAt = time.Time{}, time.Time{}
		base := time.UnixMilli(boundary - int64(i%2))
		r.EndedAt = base.Add(time.Duration(1+i*150) * time.Microsecond)
		require.NoError(t, s.Save(ctx, r))
		ids = append(ids, r.TaskID)
	}

	inspector := queue.NewInspector(backend, nil, queue.InspectorConfig{History: s})
	for _, limit := range []int{1, 3, 7, 50, 1000} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			got := listPages(t, inspector, queue.ListOptions{Limit: limit}, 2*len(ids)+2)
			seen := map[string]int{}
			for _, task := range got {
				seen[task.ID]++
			}
			for _, id := range ids {
				assert.Equal(t, 1, seen[id], "task %s (ended %s, forgotten by Redis: %v) listed %d times",
					id, ended[id].Format(time.RFC3339Nano), forget[id], seen[id])
			}
			assert.Len(t, got, len(ids), "no task but these")
			for i := 1; i < len(got); i++ {
				a, b := got[i-1], got[i]
				am, bm := a.ChangedAt().UnixMilli(), b.ChangedAt().UnixMilli()
				assert.True(t, am > bm || am == bm && a.ID > b.ID, "%s (%s) listed before %s (%s)",
					a.ID, a.ChangedAt().Format(time.RFC3339Nano), b.ID, b.ChangedAt().Format(time.RFC3339Nano))
			}
		})
	}
}

// forgetTask deletes every key of task id from Redis, as the end of its
// retention does: its keys share the hash tag of its id. Its members of
// the task index stay, as they do then, until a listing finds them gone.
func forgetTask(t *testing.T, c rueidis.Client, id string) {
	t.Helper()
	ctx := context.Background()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match("*{"+id+"}*").Count(1000).Build()).AsScanEntry()
		require.NoError(t, err)
		for _, k := range e.Elements {
			if strings.Contains(k, "index") {
				continue
			}
			require.NoError(t, c.Do(ctx, c.B().Del().Key(k).Build()).Error())
		}
		if e.Cursor == 0 {
			return
		}
		cursor = e.Cursor
	}
}

// TestMergedListingCursors: a listing with the history refuses, with
// queue.ErrInvalidQuery (400 over HTTP), a cursor no listing issues: not
// a cursor's shape, a time past the year 9999 (no task's time is: JSON
// times end there), an earlier version's cursor into the history. A
// well-formed position is a position, wherever it is: the page after it,
// empty past the oldest task, as a time range that holds none is.
func TestMergedListingCursors(t *testing.T) {
	s, _ := open(t)
	client := redistest.Start(t).Client(t)
	backend, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	ctx := context.Background()
	broker := queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: testFlows()})
	live, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	old := record(0)
	old.Flow = "ok"
	require.NoError(t, s.Save(ctx, old))
	inspector := queue.NewInspector(backend, nil, queue.InspectorConfig{History: s})

	for _, c := range []string{
		"bogus", "12.x y", "-1.abc", "1.", ".abc",
		"253402300800000." + live,          // 10000-01-01T00:00:00Z
		"9223372036854775807." + live,      // the largest int64
		"h.1796622488530.", "h.12.MTIzNDU", // an earlier version's, into the history
		"b.12.253402300800000." + live,
	} {
		_, err := inspector.List(ctx, queue.ListOptions{Cursor: c})
		assert.ErrorIs(t, err, queue.ErrInvalidQuery, "cursor %q", c)
	}

	for _, tc := range []struct {
		cursor string
		want   []string
	}{
		{"253402300799999.zzz", []string{live, old.TaskID}}, // the last millisecond of 9999: before it, every task
		{queue.Cursor{At: time.Now().Add(time.Hour), ID: "x"}.String(), []string{live, old.TaskID}},
		{queue.Cursor{At: old.EndedAt.Add(time.Millisecond), ID: "x"}.String(), []string{old.TaskID}},
		{queue.Cursor{At: old.EndedAt, ID: old.TaskID}.String(), nil}, // the oldest task's own: nothing after it
		{"0.a", nil},
		// An earlier version's cursor of the backend holds a position.
		{"b.." + queue.Cursor{At: old.EndedAt.Add(time.Millisecond), ID: "x"}.String(), []string{old.TaskID}},
	} {
		page, err := inspector.List(ctx, queue.ListOptions{Cursor: tc.cursor})
		require.NoError(t, err, "cursor %q", tc.cursor)
		var got []string
		for _, task := range page.Tasks {
			got = append(got, task.ID)
		}
		assert.Equal(t, tc.want, got, "cursor %q", tc.cursor)
		assert.Empty(t, page.Next)
		assert.NotNil(t, page.Tasks, "an empty page is [], not null")
	}
}

// TestMergedListingByOwner pages through a listing of one owner's tasks,
// with the history: Redis's listing by owner reads a bounded number of
// index members a page (four per task of the limit) and so gives pages
// with fewer tasks than the limit, or none, and a Next, when other
// owners' tasks fill the index. The merged page must stop where Redis's
// stopped, though the history's page reaches further back: the owner's
// pending tasks that Redis has not read yet come after it, and were
// skipped when the listing went on from the history's last row.
func TestMergedListingByOwner(t *testing.T) {
	s, _ := open(t)
	client := redistest.Start(t).Client(t)
	backend, err := redisbackend.New(client, redisbackend.Config{})
	require.NoError(t, err)
	ctx := context.Background()
	broker := queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: testFlows()})

	var want []string
	enqueue := func(owner string) {
		id, err := broker.Enqueue(ctx, "ok", nil, queue.EnqueueOptions{Owner: owner})
		require.NoError(t, err)
		if owner == "alice" {
			want = append(want, id)
		}
	}
	// Each group in a millisecond of its own, later than the one before:
	// a listing orders a millisecond's tasks by id.
	nextMilli := func() {
		last := time.Now().UnixMilli()
		require.Eventually(t, func() bool { return time.Now().UnixMilli() > last }, time.Second, 100*time.Microsecond)
	}
	// Newest first: ten of bob's, one of alice's, ten of bob's, one of
	// alice's: a page of limit 2 reads eight members, all bob's.
	enqueue("alice")
	nextMilli()
	for range 10 {
		enqueue("bob")
	}
	nextMilli()
	enqueue("alice")
	nextMilli()
	for range 10 {
		enqueue("bob")
	}
	// Alice's finished tasks of long ago, in the history only.
	for i := range 3 {
		r := record(i)
		r.Flow, r.Owner = "ok", "alice"
		require.NoError(t, s.Save(ctx, r))
		want = append(want, r.TaskID)
	}

	inspector := queue.NewInspector(backend, nil, queue.InspectorConfig{History: s})
	seen := map[string]int{}
	for _, task := range listPages(t, inspector, queue.ListOptions{Limit: 2, Owner: "alice"}, 50) {
		assert.Equal(t, "alice", task.Owner)
		seen[task.ID]++
	}
	for _, id := range want {
		assert.Equal(t, 1, seen[id], "alice's task %s listed %d times", id, seen[id])
	}
	assert.Len(t, seen, len(want), "no task but alice's")
}

// listPages lists every page of o, following each page's Next, and
// returns their tasks; it fails the test when a page holds more than
// o.Limit tasks or the listing takes more than most pages.
func listPages(t *testing.T, in *queue.Inspector, o queue.ListOptions, most int) []queue.TaskSummary {
	t.Helper()
	var got []queue.TaskSummary
	for pages := 0; ; pages++ {
		require.Less(t, pages, most, "the listing does not end")
		page, err := in.List(context.Background(), o)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Tasks), o.Limit)
		got = append(got, page.Tasks...)
		if page.Next == "" {
			return got
		}
		o.Cursor = page.Next
	}
}
