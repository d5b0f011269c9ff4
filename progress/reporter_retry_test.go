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
// otherwise, without progress.ErrMaybeSent, is dropped and logged, not
// retried: it may have been recorded (a timeout after the call was sent,
// a connection cut before the reply) by a store that ignores append keys,
// and would then be recorded twice. A refusal (the fence of a worker that lost
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

// TestTaskReporterTransitionResendsStop: the retries of Start, Succeed
// and Fail end, as those of reports do, at a failure that is not
// retried (the refusal of a worker's fence): the caller gets it.
func TestTaskReporterTransitionResendsStop(t *testing.T) {
	refused := errors.New("queue: lease lost")
	store := newFailingStore(t, notSent(), refused)
	r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
	err := r.Succeed(context.Background(), "ok")
	require.ErrorIs(t, err, refused)
	assert.Equal(t, 2, store.appends())
	assert.Empty(t, messages(t, store))
}

// TestTaskReporterResendsTransitions: Start, Succeed and Fail carry an
// append key, and one whose Append was not sent (progress.ErrNotSent) or
// has an unknown outcome (progress.ErrMaybeSent), whether the lost call
// had been recorded or not, is appended again with the same key: the
// call succeeds, and its event is recorded once, after the reports made
// before it.
func TestTaskReporterResendsTransitions(t *testing.T) {
	transitions := []struct {
		name string
		call func(r *progress.TaskReporter) error
		want string
	}{
		{"Start", func(r *progress.TaskReporter) error { return r.Start(context.Background(), "Running") }, "PROGRESS"},
		{"Succeed", func(r *progress.TaskReporter) error { return r.Succeed(context.Background(), "ok") }, "SUCCESS"},
		{"Fail", func(r *progress.TaskReporter) error { return r.Fail(context.Background(), "no luck") }, "FAILURE"},
	}
	cuts := []struct {
		name   string
		err    error
		before bool
	}{
		{"not sent", notSent(), true},
		{"maybe sent, not recorded", nil, true},
		{"maybe sent, recorded", nil, false},
	}
	for _, tr := range transitions {
		for _, cut := range cuts {
			t.Run(tr.name+"/"+cut.name, func(t *testing.T) {
				mem := progress.NewMemoryStore(progress.MemoryConfig{})
				require.NoError(t, mem.Create(context.Background(), "t"))
				store := &cuttingStore{Store: mem, skip: 1, cuts: 1, before: cut.before, err: cut.err}
				var logs bytes.Buffer
				r := progress.NewTaskReporter(store, "t", slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
				r.Log("a")
				require.NoError(t, r.Flush(context.Background()))

				require.NoError(t, tr.call(r), "the transition is sent again")

				assert.Equal(t, []string{"a", tr.want}, messages(t, store), "recorded once")
				assert.Contains(t, logs.String(), "task state change")
				keys := store.appendKeys()
				require.Len(t, keys, 3, "a, the transition, the transition again")
				assert.NotEmpty(t, keys[1])
				assert.Equal(t, keys[1], keys[2], "sent again with its key")
				assert.NotEqual(t, keys[0], keys[1])
			})
		}
	}
}

// cuttingStore is a store whose connection is cut around its first
// Appends: past the first skip keyed Appends, each of the next cuts keyed
// Appends is recorded (unless before is set) and then fails with
// progress.ErrMaybeSent, as a store that honours append keys answers a
// call whose reply was lost; or, if err is set, fails with err before it
// is recorded. It keeps the key of every Append.
type cuttingStore struct {
	progress.Store
	before bool
	err    error

	mu   sync.Mutex
	skip int
	cuts int
	keys []string
}

func (s *cuttingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	key := progress.AppendKey(ctx)
	s.mu.Lock()
	s.keys = append(s.keys, key)
	cut := false
	switch {
	case key == "":
	case s.skip > 0:
		s.skip--
	case s.cuts > 0:
		s.cuts--
		cut = true
	}
	s.mu.Unlock()
	if cut && s.err != nil {
		return "", s.err
	}
	if cut && s.before {
		return "", fmt.Errorf("write: broken pipe: %w", progress.ErrMaybeSent)
	}
	last, err := s.Store.Append(ctx, id, events...)
	if cut && err == nil {
		return "", fmt.Errorf("read: connection reset by peer: %w", progress.ErrMaybeSent)
	}
	return last, err
}

func (s *cuttingStore) appendKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}

// TestTaskReporterResendsWhatMayHaveBeenSent: a batch whose Append has an
// unknown outcome (progress.ErrMaybeSent) is appended again with the same
// append key, which the store records once, whether the lost call had
// been recorded or not; the batches after it wait, and each has a key of
// its own, as Start and Succeed do.
func TestTaskReporterResendsWhatMayHaveBeenSent(t *testing.T) {
	for _, before := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut before recording %v", before), func(t *testing.T) {
			mem := progress.NewMemoryStore(progress.MemoryConfig{})
			require.NoError(t, mem.Create(context.Background(), "t"))
			store := &cuttingStore{Store: mem, skip: 1, cuts: 2, before: before}
			var logs bytes.Buffer
			r := progress.NewTaskReporter(store, "t", slog.New(slog.NewTextHandler(&logs, nil)))

			require.NoError(t, r.Start(context.Background(), "Running"))
			r.Log("a")
			require.NoError(t, r.Flush(context.Background()))
			r.Log("b")
			r.Status("c")
			require.NoError(t, r.Flush(context.Background()))
			require.NoError(t, r.Succeed(context.Background(), "ok"))

			assert.Equal(t, []string{"PROGRESS", "a", "b", "", "SUCCESS"}, messages(t, store), "each event once, in order")
			assert.NotContains(t, logs.String(), "not recorded", "nothing was dropped")
			keys := store.appendKeys()
			// start, a cut twice, a again, b and c (in one batch or two),
			// end
			require.Contains(t, []int{6, 7}, len(keys), "%q", keys)
			assert.NotEmpty(t, keys[0], "Start carries a key")
			assert.NotEmpty(t, keys[1])
			assert.Equal(t, []string{keys[1], keys[1]}, keys[2:4], "a is sent again with its key")
			seen := map[string]bool{keys[0]: true, keys[1]: true}
			for _, k := range keys[4:] {
				assert.NotEmpty(t, k)
				assert.False(t, seen[k], "b and c, and the end, are other batches, each with a key of its own: %q", keys)
				seen[k] = true
			}
		})
	}
}

// TestTaskReporterKeysAreItsOwn: two reporters of one task never give
// two batches the same key.
func TestTaskReporterKeysAreItsOwn(t *testing.T) {
	mem := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, mem.Create(context.Background(), "t"))
	store := &cuttingStore{Store: mem}
	for range 2 {
		r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
		for i := range 3 {
			r.Log(fmt.Sprint(i))
			require.NoError(t, r.Flush(context.Background()))
		}
	}
	keys := store.appendKeys()
	require.Len(t, keys, 6)
	seen := map[string]bool{}
	for _, k := range keys {
		require.NotEmpty(t, k)
		assert.False(t, seen[k], "key %q given twice", k)
		seen[k] = true
	}
	assert.Len(t, messages(t, store), 6, "every batch recorded")
}
