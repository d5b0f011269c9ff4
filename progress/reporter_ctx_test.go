package progress_test

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// callLimit bounds the wait for a call that should return at once; a
// guard against a hang, not a measurement: a call that does not honour
// its ctx returns after the retries (10 s a batch) with their error.
const callLimit = 2 * time.Minute

// downStore is a MemoryStore that is down, failing every Append with an
// error of a store that could not reach its storage (progress.ErrNotSent),
// until up is called; it tells refused of each failure.
type downStore struct {
	progress.Store
	down    atomic.Bool
	refused chan struct{}
}

func newDownStore(t *testing.T) *downStore {
	t.Helper()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(context.Background(), "t"))
	d := &downStore{Store: s, refused: make(chan struct{}, 1)}
	d.down.Store(true)
	return d
}

func (d *downStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	if d.down.Load() {
		select {
		case d.refused <- struct{}{}:
		default:
		}
		return "", notSent()
	}
	return d.Store.Append(ctx, id, events...)
}

func (d *downStore) up() { d.down.Store(false) }

// TestTaskReporterTransitionHonoursContext: with the store down, Start,
// Succeed and Fail return once their ctx ends, also when they send the
// queued batches themselves (no Append in flight): the ctx bounds their
// wait, not the retries. What they and the reports before them queued is
// still sent, in order, once each, when the store comes back within the
// retries' time.
func TestTaskReporterTransitionHonoursContext(t *testing.T) {
	for _, tt := range []struct {
		name    string
		reports []string
		call    func(r *progress.TaskReporter, ctx context.Context) error
		want    []string
	}{
		{"Start, nothing queued", nil,
			func(r *progress.TaskReporter, ctx context.Context) error { return r.Start(ctx, "Running") },
			[]string{"PROGRESS"}},
		{"Fail after reports", []string{"aaaaaa", "bbbbbb", "cccccc"},
			func(r *progress.TaskReporter, ctx context.Context) error { return r.Fail(ctx, "stop") },
			[]string{"aaaaaa", "bbbbbb", "cccccc", "FAILURE"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// One P: the goroutine started for the first report has not
			// run when the transition is called, which then sends the
			// queued batches itself.
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			store := newDownStore(t)
			r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
			r.SetMaxReportBytes(8)     // a batch per report
			r.SetMaxRunReportBytes(-1) // the run's limit is not what this tests
			for _, msg := range tt.reports {
				r.Log(msg)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- tt.call(r, ctx) }()
			<-store.refused // the store is down: the first batch is being retried
			cancel()
			select {
			case err := <-errc:
				assert.ErrorIs(t, err, context.Canceled)
			case <-time.After(callLimit):
				t.Fatal("the call did not return once its ctx ended")
			}
			assert.Empty(t, messages(t, store), "the store is still down")

			store.up()
			require.NoError(t, r.Flush(context.Background()))
			assert.Equal(t, tt.want, messages(t, store), "nothing lost, in order, once each")
		})
	}
}
