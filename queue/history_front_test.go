package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// shortPages is a backend that lists its tasks itself (queue.TaskLister)
// one task a page, with a Next while more follow, whatever the limit: a
// page that holds fewer tasks than its limit, as the Redis backend's
// listing by owner gives (it reads a bounded number of members a page).
type shortPages struct {
	queue.Backend
	in *queue.Inspector // lists Backend, without a History
}

func (s shortPages) ListTasks(ctx context.Context, o queue.ListOptions) (queue.TaskPage, error) {
	o.Limit = 1
	return s.in.List(ctx, o)
}

func (s shortPages) TaskStats(ctx context.Context) (queue.Stats, error) {
	return queue.Stats{}, nil
}

// TestMergedListingStopsAtTheNewerFrontier: a backend page that holds
// fewer tasks than the limit, with a Next, has listed the backend down to
// its last task only. The merged page must stop there, where the
// backend's unread tasks may come, even when the History's page reaches
// further back; paging on lists every task of both once, in order.
func TestMergedListingStopsAtTheNewerFrontier(t *testing.T) {
	ctx := context.Background()
	mem, store := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: flowsNamed("f")})
	var want []string
	for range 3 {
		id, err := broker.Enqueue(ctx, "f", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		want = append(want, id)
	}
	// The order of a listing: by the time each entered its state (to the
	// millisecond), then by id, greatest first.
	plain := queue.NewInspector(mem, store, queue.InspectorConfig{})
	all, err := plain.List(ctx, queue.ListOptions{Limit: 10})
	require.NoError(t, err)
	want = want[:0]
	for _, s := range all.Tasks {
		want = append(want, s.ID)
	}
	require.Len(t, want, 3)

	old := time.Now().Add(-48 * time.Hour)
	h := &fakeHistory{}
	for i := range 4 {
		end := old.Add(-time.Duration(i) * time.Minute)
		id := fmt.Sprintf("old%d", i)
		h.tasks = append(h.tasks, queue.TaskSummary{ID: id, Flow: "f", State: progress.StateSuccess,
			EnqueuedAt: end.Add(-time.Second), StartedAt: end.Add(-time.Second), EndedAt: end})
		want = append(want, id)
	}
	in := queue.NewInspector(shortPages{Backend: mem, in: plain}, store, queue.InspectorConfig{History: h})

	var got []string
	cursor := ""
	for range 20 {
		page, err := in.List(ctx, queue.ListOptions{Limit: 2, Cursor: cursor})
		require.NoError(t, err)
		for _, s := range page.Tasks {
			got = append(got, s.ID)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	assert.Equal(t, want, got, "every task of both once, in the order of a listing")
}
