package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// fakeHistory is a History of finished tasks that records its queries.
type fakeHistory struct {
	tasks   []queue.TaskSummary // newest first
	queries []queue.HistoryQuery
	err     error
}

func (h *fakeHistory) ListHistory(_ context.Context, q queue.HistoryQuery) (queue.TaskPage, error) {
	h.queries = append(h.queries, q)
	if h.err != nil {
		return queue.TaskPage{}, h.err
	}
	var page queue.TaskPage
	for _, t := range h.tasks {
		if q.After != nil && !q.After.Precedes(&t) {
			continue
		}
		if (q.State == "" || t.State == q.State) && (q.Flow == "" || t.Flow == q.Flow) &&
			(q.Owner == "" || t.Owner == q.Owner) && (q.Since.IsZero() || !t.EndedAt.Before(q.Since)) &&
			(q.Until.IsZero() || t.EndedAt.Before(q.Until)) {
			if len(page.Tasks) == q.Limit {
				page.Next = "more"
				break
			}
			page.Tasks = append(page.Tasks, t)
		}
	}
	return page, nil
}

// TestInspectorGoesOnIntoHistory checks the seam to a store of finished
// tasks: a listing lists the History's tasks with the backend's, in one
// order, reading the History after the position of the last task listed.
func TestInspectorGoesOnIntoHistory(t *testing.T) {
	ctx := context.Background()
	backend, store := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flowsNamed("f")})
	var live []string
	for range 3 {
		time.Sleep(2 * time.Millisecond)
		id, err := broker.Enqueue(ctx, "f", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		live = append([]string{id}, live...)
	}
	old := time.Now().Add(-48 * time.Hour)
	h := &fakeHistory{}
	for i := range 5 {
		end := old.Add(-time.Duration(i) * time.Minute)
		h.tasks = append(h.tasks, queue.TaskSummary{ID: fmt.Sprintf("old%d", i), Flow: "f", State: progress.StateSuccess,
			EnqueuedAt: end.Add(-time.Second), StartedAt: end.Add(-time.Second), EndedAt: end})
	}
	in := queue.NewInspector(backend, store, queue.InspectorConfig{History: h})

	page, err := in.List(ctx, queue.ListOptions{Limit: 4})
	require.NoError(t, err)
	ids := func(p queue.TaskPage) []string {
		var out []string
		for _, s := range p.Tasks {
			out = append(out, s.ID)
		}
		return out
	}
	assert.Equal(t, append(live, "old0"), ids(page), "the backend's tasks, then the history's")
	require.Len(t, h.queries, 1)
	assert.Nil(t, h.queries[0].After, "the first page reads the history from its newest task")
	require.NotEmpty(t, page.Next)
	last := queue.CursorOf(&page.Tasks[3])

	page, err = in.List(ctx, queue.ListOptions{Limit: 4, Cursor: page.Next})
	require.NoError(t, err)
	assert.Equal(t, []string{"old1", "old2", "old3", "old4"}, ids(page))
	require.Len(t, h.queries, 2)
	require.NotNil(t, h.queries[1].After)
	assert.Equal(t, last.ID, h.queries[1].After.ID, "the next page reads the history after the last task listed")
	assert.Equal(t, last.At.UnixMilli(), h.queries[1].After.At.UnixMilli())
	assert.Empty(t, page.Next)

	// Pending tasks are not in a history of finished ones.
	h.queries = nil
	page, err = in.List(ctx, queue.ListOptions{State: progress.StatePending})
	require.NoError(t, err)
	assert.Len(t, page.Tasks, 3)
	assert.Empty(t, h.queries, "the history is not asked for pending tasks")

	// A full page of the backend's tasks ends with a cursor into the
	// history, which the next page reads.
	page, err = in.List(ctx, queue.ListOptions{Limit: 3})
	require.NoError(t, err)
	assert.Equal(t, live, ids(page))
	page, err = in.List(ctx, queue.ListOptions{Limit: 3, Cursor: page.Next})
	require.NoError(t, err)
	assert.Equal(t, []string{"old0", "old1", "old2"}, ids(page))

	for _, bad := range []string{"h.", "h.x.", "h.12.%%%", "b.", "b.x.1.abc", "b.-5.1.abc", "b.12.", "b..junk"} {
		_, err = in.List(ctx, queue.ListOptions{Cursor: bad})
		assert.ErrorIs(t, err, queue.ErrInvalidQuery, "cursor %q", bad)
	}
	h.err = errors.New("database down")
	_, err = in.List(ctx, queue.ListOptions{Limit: 10})
	assert.ErrorContains(t, err, "database down")
}

// TestInspectorHistoryFilters checks that a listing by owner and time
// range goes on into the History with the same filters: the tasks of the
// owner in the range, the backend's then the history's.
func TestInspectorHistoryFilters(t *testing.T) {
	ctx := context.Background()
	backend, store := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flowsNamed("f")})
	var ada []string
	for i := range 4 {
		time.Sleep(2 * time.Millisecond)
		owner := "ada"
		if i%2 == 1 {
			owner = "bob"
		}
		id, err := broker.Enqueue(ctx, "f", json.RawMessage(`{}`), queue.EnqueueOptions{Owner: owner})
		require.NoError(t, err)
		if owner == "ada" {
			ada = append([]string{id}, ada...)
		}
	}
	old := time.Now().Add(-48 * time.Hour)
	h := &fakeHistory{}
	for i := range 6 {
		end := old.Add(-time.Duration(i) * time.Hour)
		owner := "ada"
		if i%2 == 1 {
			owner = "bob"
		}
		h.tasks = append(h.tasks, queue.TaskSummary{ID: fmt.Sprintf("old%d", i), Flow: "f", State: progress.StateSuccess, Owner: owner,
			EnqueuedAt: end.Add(-time.Second), StartedAt: end.Add(-time.Second), EndedAt: end})
	}
	in := queue.NewInspector(backend, store, queue.InspectorConfig{History: h})
	// From just before old2 ended to now: old0 and old2 of the history.
	since, until := old.Add(-2*time.Hour-time.Minute), time.Now().Add(time.Minute)
	o := queue.ListOptions{Owner: "ada", Since: since, Until: until, Limit: 3}
	var got []string
	for range 10 {
		page, err := in.List(ctx, o)
		require.NoError(t, err)
		for _, s := range page.Tasks {
			got = append(got, s.ID)
		}
		if page.Next == "" {
			break
		}
		o.Cursor = page.Next
	}
	assert.Equal(t, append(ada, "old0", "old2"), got)
	require.NotEmpty(t, h.queries)
	for _, q := range h.queries {
		assert.Equal(t, "ada", q.Owner)
		assert.True(t, since.Equal(q.Since), "since %v", q.Since)
		assert.True(t, until.Equal(q.Until), "until %v", q.Until)
	}

	// Until before Since is refused before anything is read.
	h.queries = nil
	_, err := in.List(ctx, queue.ListOptions{Since: until, Until: since})
	assert.ErrorIs(t, err, queue.ErrInvalidQuery)
	assert.Empty(t, h.queries)
}
