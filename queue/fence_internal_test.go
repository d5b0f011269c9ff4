package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// blockingStore holds each Append until the test lets it go.
type blockingStore struct {
	progress.Store
	entered chan struct{}
	proceed chan struct{}
}

func (s *blockingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	s.entered <- struct{}{}
	<-s.proceed
	return s.Store.Append(ctx, id, events...)
}

// TestReleaseFencesAppends: once a run has let its lease go, its store
// refuses every Append with ErrLeaseLost; an Append already past the
// check when the run lets go lands before release returns, so that none
// lands after the task is handed back.
func TestReleaseFencesAppends(t *testing.T) {
	mem := progress.NewMemoryStore(progress.MemoryConfig{})
	ctx := context.Background()
	require.NoError(t, mem.Create(ctx, "t"))
	w := NewWorker(NewMemory(MemoryConfig{}), mem, WorkerConfig{Logger: slog.New(slog.DiscardHandler)})
	j := &job{w: w, task: &Task{ID: "t"}}
	blocking := &blockingStore{Store: mem, entered: make(chan struct{}), proceed: make(chan struct{})}
	store := &fencedStore{Store: blocking, j: j}

	appended := make(chan error, 1)
	go func() {
		_, err := store.Append(ctx, "t", progress.LogEvent("in flight"))
		appended <- err
	}()
	<-blocking.entered
	released := make(chan struct{})
	go func() {
		j.release()
		close(released)
	}()
	select {
	case <-released:
		require.FailNow(t, "release returned while an Append was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(blocking.proceed)
	require.NoError(t, <-appended, "the Append in flight")
	<-released

	_, err := store.Append(ctx, "t", progress.LogEvent("late"))
	assert.ErrorIs(t, err, ErrLeaseLost)
	assert.ErrorIs(t, err, errReleased)
	events, err := mem.Events(ctx, "t", "")
	require.NoError(t, err)
	var msgs []string
	for _, e := range events {
		if e.Step != nil {
			msgs = append(msgs, e.Step.Message)
		}
	}
	assert.Equal(t, []string{"in flight"}, msgs)
}
