package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// FuzzListCursor: a cursor is untrusted input (GET /tasks/?cursor=):
// whatever it holds, a listing, with a History or without, lists a page
// or refuses the cursor with ErrInvalidQuery (400 over HTTP), and a page
// lists its tasks as a list, never nil.
func FuzzListCursor(f *testing.F) {
	for _, seed := range []string{"", "1796622488530.33402838b10dd5119a08e9ad9a502128", "h.1796622488530.", "h.12.MTIzNDU",
		"b.1796622488530.1796622488530.33402838b10dd5119a08e9ad9a502128", "b..1.a", "b.", "h.", "b.h.1.", "h.-1.", "9223372036854775807.a",
		"PENDING:1.a", "b.1.b.1.b.1.a"} {
		f.Add(seed)
	}
	ctx := context.Background()
	backend, store := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flowsNamed("f")})
	for range 3 {
		if _, err := broker.Enqueue(ctx, "f", json.RawMessage(`{}`), queue.EnqueueOptions{}); err != nil {
			f.Fatal(err)
		}
	}
	end := time.Now().Add(-48 * time.Hour)
	h := &fakeHistory{tasks: []queue.TaskSummary{{ID: "old0", Flow: "f", State: progress.StateSuccess, EnqueuedAt: end, StartedAt: end, EndedAt: end}}}
	inspectors := []*queue.Inspector{
		queue.NewInspector(backend, store, queue.InspectorConfig{}),
		queue.NewInspector(backend, store, queue.InspectorConfig{History: h}),
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		for _, in := range inspectors {
			for _, state := range []progress.State{"", progress.StateSuccess, progress.StatePending} {
				page, err := in.List(ctx, queue.ListOptions{State: state, Limit: 2, Cursor: cursor})
				if err != nil {
					if !errors.Is(err, queue.ErrInvalidQuery) {
						t.Fatalf("cursor %q, state %q: %v", cursor, state, err)
					}
					continue
				}
				if page.Tasks == nil {
					t.Fatalf("cursor %q, state %q: nil tasks", cursor, state)
				}
			}
		}
	})
}
