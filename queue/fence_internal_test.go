package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
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

// unsentStore fails its first fails Appends with progress.ErrNotSent and
// counts the Appends.
type unsentStore struct {
	progress.Store
	fails, calls atomic.Int32
}

func (s *unsentStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	s.calls.Add(1)
	if s.fails.Add(-1) >= 0 {
		return "", fmt.Errorf("dial tcp: connection refused: %w", progress.ErrNotSent)
	}
	return s.Store.Append(ctx, id, events...)
}

// TestResentEndBounded: the reporter sends a task's end again through
// the fence (see fencedStore.resentEnd) while the worker runs and the
// lease has not passed its deadline; once the worker has stopped, or the
// lease has passed, the fence refuses the resend at once, and the worker
// falls back to giving the task back.
func TestResentEndBounded(t *testing.T) {
	for _, tt := range []struct {
		name    string
		prepare func(j *job)
		refused bool
	}{
		{"lease held", func(*job) {}, false},
		{"no deadline", func(j *job) { j.lease.Deadline = time.Time{} }, false},
		{"worker stopped", func(j *job) { j.w.stopFlows(errShutdown) }, true},
		{"lease passed", func(j *job) { j.lease.Deadline = time.Now().Add(-time.Millisecond) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mem := progress.NewMemoryStore(progress.MemoryConfig{})
			ctx := context.Background()
			require.NoError(t, mem.Create(ctx, "t"))
			w := NewWorker(NewMemory(MemoryConfig{}), mem, WorkerConfig{Logger: slog.New(slog.DiscardHandler)})
			task := &Task{ID: "t"}
			j := &job{w: w, task: task, lease: &Lease{Task: task, Deadline: time.Now().Add(time.Minute)}}
			unsent := &unsentStore{Store: mem}
			unsent.fails.Store(1)
			rep := progress.NewTaskReporter(&fencedStore{Store: unsent, j: j}, "t", slog.New(slog.DiscardHandler))
			tt.prepare(j)

			err := rep.Succeed(ctx, "ok")
			snap, _, serr := mem.Snapshot(ctx, "t")
			require.NoError(t, serr)
			if tt.refused {
				require.ErrorIs(t, err, errEndNotResent)
				assert.Equal(t, int32(1), unsent.calls.Load(), "not sent again")
				assert.Equal(t, progress.StatePending, snap.State)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, int32(2), unsent.calls.Load(), "sent again once")
			assert.Equal(t, progress.StateSuccess, snap.State)
		})
	}
}
