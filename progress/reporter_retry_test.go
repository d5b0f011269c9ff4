package progress_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// failingStore fails its Appends with errs, one each, in order, then lets
// them through to a MemoryStore; it tells failed of each failure.
type failingStore struct {
	progress.Store
	failed chan error

	mu    sync.Mutex
	errs  []error
	calls int
}

func newFailingStore(t *testing.T, errs ...error) *failingStore {
	t.Helper()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(context.Background(), "t"))
	return &failingStore{Store: s, errs: errs, failed: make(chan error, len(errs))}
}

func (f *failingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	f.mu.Lock()
	f.calls++
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	f.mu.Unlock()
	if err != nil {
		f.failed <- err
		return "", err
	}
	return f.Store.Append(ctx, id, events...)
}

func (f *failingStore) appends() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func messages(t *testing.T, s progress.Store) []string {
	t.Helper()
	var out []string
	for _, e := range storedEvents(t, s, "t") {
		if e.Step != nil {
			out = append(out, e.Step.Message)
		} else {
			out = append(out, string(e.State))
		}
	}
	return out
}

// notSent is an error of a store that could not reach its storage: the
// Append was not sent.
func notSent() error {
	return fmt.Errorf("dial tcp 127.0.0.1:1: connect: connection refused: %w", progress.ErrNotSent)
}

// TestTaskReporterRetriesUnsentBatch: a batch whose Append was not sent is
// appended again until it lands; the events reported meanwhile wait
// behind it, and every event is recorded once, in order.
func TestTaskReporterRetriesUnsentBatch(t *testing.T) {
	store := newFailingStore(t, notSent(), notSent(), notSent())
	var logs bytes.Buffer
	r := progress.NewTaskReporter(store, "t", slog.New(slog.NewTextHandler(&logs, nil)))

	r.Log("a")
	<-store.failed // the first Append failed: the next reports come while it is retried
	r.Log("b")
	r.Status("c")
	r.Log("d")
	require.NoError(t, r.Flush(context.Background()))
	require.NoError(t, r.Succeed(context.Background(), "ok"))

	assert.Equal(t, []string{"a", "b", "", "d", "SUCCESS"}, messages(t, store), "each event once, in order")
	assert.Equal(t, 3+3, store.appends(), "three failures, then a, then b-d, then the end")
	assert.NotContains(t, logs.String(), "not recorded", "nothing was dropped")
}

// TestTaskReporterDropsWhatMayHaveBeenSent: a batch whose Append failed
// otherwise is dropped and logged, not retried: it may have been recorded
// (a timeout after the call was sent, a connection cut before the reply),
// and Append is not idempotent. A refusal (the fence of a worker that lost
// its lease) or ErrFinished, after a failure to send, ends the retries.
func TestTaskReporterDropsWhatMayHaveBeenSent(t *testing.T) {
	refused := errors.New("queue: lease lost")
	tests := []struct {
		name    string
		errs    []error
		appends int  // with the Append of the next report
		logged  bool // the drop is logged
	}{
		{"outcome unknown", []error{context.DeadlineExceeded}, 2, true},
		{"connection cut", []error{fmt.Errorf("read: connection reset by peer")}, 2, true},
		{"refused after a failure to send", []error{notSent(), notSent(), refused}, 4, true},
		{"finished after a failure to send", []error{notSent(), progress.ErrFinished}, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFailingStore(t, tt.errs...)
			var logs bytes.Buffer
			r := progress.NewTaskReporter(store, "t", slog.New(slog.NewTextHandler(&logs, nil)))

			r.Log("lost")
			require.NoError(t, r.Flush(context.Background()))
			r.Log("next")
			require.NoError(t, r.Flush(context.Background()))

			assert.Equal(t, []string{"next"}, messages(t, store), "the failed batch is dropped, the next one lands")
			assert.Equal(t, tt.appends, store.appends())
			if tt.logged {
				assert.Contains(t, logs.String(), "progress event not recorded")
				assert.Contains(t, logs.String(), tt.errs[len(tt.errs)-1].Error())
			} else {
				assert.NotContains(t, logs.String(), "not recorded")
			}
		})
	}
}

// TestTaskReporterDoesNotRetryTransitions: Start, Succeed and Fail are not
// retried: their callers get the error and decide.
func TestTaskReporterDoesNotRetryTransitions(t *testing.T) {
	store := newFailingStore(t, notSent())
	r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
	err := r.Succeed(context.Background(), "ok")
	require.ErrorIs(t, err, progress.ErrNotSent)
	assert.Equal(t, 1, store.appends())
	assert.Empty(t, messages(t, store))
}
