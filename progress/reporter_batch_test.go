package progress_test

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// gatedStore holds every Append until the test lets it through, and
// records how many events each Append carried.
type gatedStore struct {
	progress.Store
	entered chan struct{} // one value per Append that has started
	gate    chan struct{} // one value lets one Append through

	mu    sync.Mutex
	sizes []int
}

func newGatedStore(t *testing.T) *gatedStore {
	t.Helper()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(context.Background(), "t"))
	return &gatedStore{Store: s, entered: make(chan struct{}, 100), gate: make(chan struct{})}
}

func (g *gatedStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	g.mu.Lock()
	g.sizes = append(g.sizes, len(events))
	g.mu.Unlock()
	return g.Store.Append(ctx, id, events...)
}

func (g *gatedStore) appendSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitEntered waits for the next Append to start.
func (g *gatedStore) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no Append started")
	}
}

// release lets Appends through in the background until the test ends.
func (g *gatedStore) release(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case g.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

func statuses(t *testing.T, s progress.Store) []string {
	t.Helper()
	var out []string
	for _, e := range storedEvents(t, s, "t") {
		if e.Type == progress.EventState {
			out = append(out, string(e.State))
		} else {
			out = append(out, e.Status)
		}
	}
	return out
}

// TestTaskReporterBatchesWhileAppending: the events reported while an
// Append is in flight go in one Append, with the terminal event, in order;
// reporting never waits for the store.
func TestTaskReporterBatchesWhileAppending(t *testing.T) {
	store := newGatedStore(t)
	r := progress.NewTaskReporter(store, "t", nil)

	r.Status("1") // sent at once, held at the gate
	store.waitEntered(t)
	for i := 2; i <= 5; i++ {
		r.Status(strconv.Itoa(i)) // returns although the store is stuck
	}
	store.release(t)
	require.NoError(t, r.Succeed(context.Background(), "done"))

	assert.Equal(t, []string{"1", "2", "3", "4", "5", "SUCCESS"}, statuses(t, store))
	// The four waiting events go in one Append, with the terminal one if
	// Succeed came before the first Append returned.
	assert.Contains(t, [][]int{{1, 5}, {1, 4, 1}}, store.appendSizes())
}

func TestTaskReporterFlush(t *testing.T) {
	store := newGatedStore(t)
	r := progress.NewTaskReporter(store, "t", nil)
	require.NoError(t, r.Flush(context.Background()), "nothing to flush")

	r.Log("a")
	store.waitEntered(t)
	r.Log("b")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, r.Flush(ctx), context.DeadlineExceeded, "the store is stuck")

	store.release(t)
	require.NoError(t, r.Flush(context.Background()))
	snap, _, err := store.Snapshot(context.Background(), "t")
	require.NoError(t, err)
	assert.Len(t, snap.Details.StepResults, 2)
}

// TestTaskReporterBoundsPending: past the bound, reporting waits for the
// store instead of holding more events.
func TestTaskReporterBoundsPending(t *testing.T) {
	store := newGatedStore(t)
	r := progress.NewTaskReporter(store, "t", nil)
	r.Token("first")
	store.waitEntered(t)

	reported := make(chan struct{})
	go func() {
		defer close(reported)
		for range 1001 {
			r.Token("x")
		}
	}()
	select {
	case <-reported:
		t.Fatal("1001 events held while the store is stuck")
	case <-time.After(50 * time.Millisecond):
	}
	store.release(t)
	<-reported
	require.NoError(t, r.Flush(context.Background()))
	events := storedEvents(t, store, "t")
	assert.Len(t, events, 1002)
}

func TestTaskReporterLogsFailedBatch(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	var logs bytes.Buffer
	r := progress.NewTaskReporter(store, "missing", slog.New(slog.NewTextHandler(&logs, nil)))
	r.Status("lost")
	require.NoError(t, r.Flush(context.Background()))
	assert.Contains(t, logs.String(), "progress event not recorded")
	assert.Contains(t, logs.String(), "task_id=missing")
}

func TestTaskReporterTerminalTakesOverUnstartedSender(t *testing.T) {
	// With one P, the goroutine started for the first report cannot run
	// before Succeed, which is called without yielding: Succeed sends the
	// reports and the terminal event itself, in one Append.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	g := newGatedStore(t)
	g.release(t)
	s := &stackStore{Store: g}
	r := progress.NewTaskReporter(s, "t", nil)
	r.Status("one")
	r.Progress(50, "two")
	require.NoError(t, r.Succeed(context.Background(), "done"))
	require.NoError(t, r.Flush(context.Background()))
	assert.Equal(t, []int{3}, g.appendSizes())
	require.Len(t, s.stacks, 1)
	assert.Contains(t, s.stacks[0], "(*TaskReporter).Succeed", "the Append was not made by Succeed's goroutine")
	assert.Equal(t, []string{"one", "two", "SUCCESS"}, statuses(t, g.Store))

	// Reports after the terminal event still go through the store, which
	// refuses them, in the background.
	r.Status("late")
	require.NoError(t, r.Flush(context.Background()))
	assert.Equal(t, []int{3, 1}, g.appendSizes())
}

// stackStore records the stack of each Append's goroutine.
type stackStore struct {
	progress.Store
	mu     sync.Mutex
	stacks []string
}

func (s *stackStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	s.mu.Lock()
	s.stacks = append(s.stacks, string(debug.Stack()))
	s.mu.Unlock()
	return s.Store.Append(ctx, id, events...)
}
