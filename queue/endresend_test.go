package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// endCuttingStore wraps a progress store that honours append keys, and
// fails the first Append that ends a task with err: recorded first if
// recorded is set (a connection cut after the store ran it, before the
// reply). It keeps the append keys of the Appends that end a task.
type endCuttingStore struct {
	progress.Backend
	err      error
	recorded bool

	mu   sync.Mutex
	cut  bool
	keys []string
}

func (s *endCuttingStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	if len(events) == 0 || !events[len(events)-1].Terminal() {
		return s.Backend.Append(ctx, id, events...)
	}
	s.mu.Lock()
	s.keys = append(s.keys, progress.AppendKey(ctx))
	cut := !s.cut
	s.cut = true
	s.mu.Unlock()
	if !cut {
		return s.Backend.Append(ctx, id, events...)
	}
	if s.recorded {
		if _, err := s.Backend.Append(ctx, id, events...); err != nil {
			return "", err
		}
	}
	return "", s.err
}

func (s *endCuttingStore) endKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}

// TestWorkerResendsEnd: a task's end (SUCCESS, or a FAILURE that is
// buried) whose first Append was not sent (progress.ErrNotSent) or has
// an unknown outcome (progress.ErrMaybeSent), whether the store had
// recorded it or not, is sent again with its append key: the flow runs
// once, the task ends once, its finish hooks run once, a FAILURE is
// buried once, and the task is neither given back nor charged an
// attempt or a hand-back.
func TestWorkerResendsEnd(t *testing.T) {
	cuts := []struct {
		name     string
		err      error
		recorded bool
	}{
		{"not sent", fmt.Errorf("%w: dial tcp: connection refused: %w", queue.ErrUnavailable, progress.ErrNotSent), false},
		{"maybe sent, not recorded", fmt.Errorf("%w: %w: write: broken pipe", progress.ErrMaybeSent, queue.ErrUnavailable), false},
		{"maybe sent, recorded", fmt.Errorf("%w: %w: read: connection reset by peer", progress.ErrMaybeSent, queue.ErrUnavailable), true},
	}
	ends := []struct {
		name string
		err  error
		want progress.State
	}{
		{"success", nil, progress.StateSuccess},
		{"failure", flow.Permanent(errors.New("no luck")), progress.StateFailure},
	}
	for _, end := range ends {
		for _, cut := range cuts {
			t.Run(end.name+"/"+cut.name, func(t *testing.T) {
				s := newSetup()
				var runs, hooks atomic.Int32
				s.reg.MustRegister("once", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					runs.Add(1)
					ft.Progress.Log("working")
					return "result", end.err
				}))
				store := &endCuttingStore{Backend: s.store, err: cut.err, recorded: cut.recorded}
				logs := &logRecorder{}
				w := queue.NewWorker(s.mem, store, queue.WorkerConfig{
					Registry: s.reg, Backoff: fastBackoff, Logger: slog.New(logs),
					OnFinish: []queue.FinishHook{func(context.Context, queue.Finished) error {
						hooks.Add(1)
						return nil
					}},
				})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- w.Run(ctx) }()

				id := s.enqueue(t, "once", queue.EnqueueOptions{MaxAttempts: 3})
				snap := waitTerminal(t, s.store, id)
				require.Eventually(t, func() bool {
					d, err := s.mem.Depth(context.Background())
					return err == nil && d.Running == 0
				}, waitLong, 5*time.Millisecond, "the task is let go")
				cancel()
				require.NoError(t, <-done)

				assert.Equal(t, end.want, snap.State)
				assert.Equal(t, int32(1), runs.Load(), "the flow ran once")
				assert.Equal(t, int32(1), hooks.Load(), "the finish hooks ran once")
				events, err := s.store.Events(context.Background(), id, "")
				require.NoError(t, err)
				terminal := 0
				for _, e := range events {
					if e.Terminal() {
						terminal++
					}
				}
				assert.Equal(t, 1, terminal, "the end is recorded once")
				keys := store.endKeys()
				require.Len(t, keys, 2, "the end, sent again once")
				assert.NotEmpty(t, keys[0])
				assert.Equal(t, keys[0], keys[1], "with the same append key")

				task, err := s.mem.Get(context.Background(), id)
				require.NoError(t, err)
				assert.Equal(t, 1, task.Attempt, "no lease after the first")
				assert.Zero(t, task.HandBacks, "not given back")
				d, err := s.mem.Depth(context.Background())
				require.NoError(t, err)
				assert.Equal(t, queue.Depth{}, d, "nothing waits or runs")
				dead, err := s.mem.Dead(context.Background(), 10)
				require.NoError(t, err)
				if end.want == progress.StateFailure {
					require.Len(t, dead, 1, "buried once")
					assert.Equal(t, id, dead[0].ID)
				} else {
					assert.Empty(t, dead)
				}
				assert.Zero(t, logs.count("flows: progress store failed; giving the task back"))
				assert.Zero(t, logs.count("flows: acknowledging the task failed"))
				assert.Zero(t, logs.count("flows: burying the failed task failed"))
			})
		}
	}
}
