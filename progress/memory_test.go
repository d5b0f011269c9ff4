package progress_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/progress/progresstest"
)

func TestMemoryStoreConformance(t *testing.T) {
	progresstest.Run(t, func(t *testing.T) progress.Backend {
		return progress.NewMemoryStore(progress.MemoryConfig{})
	})
}

// TestMemoryStoreRetentionConformance: a subscription of a task whose
// retention passes ends soon after, though no other call of the store
// comes to sweep it.
func TestMemoryStoreRetentionConformance(t *testing.T) {
	progresstest.RunRetention(t, time.Second, func(t *testing.T) progress.Backend {
		return progress.NewMemoryStore(progress.MemoryConfig{Retention: time.Second})
	})
}

func TestMemoryStoreAppendKeyConformance(t *testing.T) {
	progresstest.RunAppendKeys(t, func(t *testing.T) progress.Backend {
		return progress.NewMemoryStore(progress.MemoryConfig{})
	})
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newClockedStore(t *testing.T, retention time.Duration) (*progress.MemoryStore, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := progress.NewMemoryStore(progress.MemoryConfig{Retention: retention})
	progress.SetMemoryClock(s, clock.Now)
	return s, clock
}

func TestMemoryStoreCheckpointConformance(t *testing.T) {
	progresstest.RunCheckpoints(t, func(t *testing.T) progresstest.CheckpointBackend {
		return progress.NewMemoryStore(progress.MemoryConfig{})
	})
}

// TestMemoryStoreCheckpointRetention: checkpoints go with their task once
// its retention has passed, and a save keeps the task as an Append does.
func TestMemoryStoreCheckpointRetention(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedStore(t, time.Hour)
	require.NoError(t, s.Create(ctx, "saved"))
	require.NoError(t, s.Create(ctx, "idle"))
	cp := progress.Checkpoint{Key: "step", Attempt: 1, Output: []byte(`1`)}
	require.NoError(t, s.SaveCheckpoint(ctx, "idle", cp))
	clock.Advance(40 * time.Minute)
	require.NoError(t, s.SaveCheckpoint(ctx, "saved", cp))
	clock.Advance(30 * time.Minute) // saved: 30m since its last write, idle: 70m

	_, err := s.Checkpoints(ctx, "idle")
	assert.ErrorIs(t, err, progress.ErrNotFound, "a task past its retention is gone with its checkpoints")
	got, err := s.Checkpoints(ctx, "saved")
	require.NoError(t, err, "a checkpoint is a write: the task's retention started again")
	assert.Equal(t, map[string]progress.Checkpoint{"step": cp}, got)

	require.NoError(t, s.Create(ctx, "idle"))
	got, err = s.Checkpoints(ctx, "idle")
	require.NoError(t, err)
	assert.Empty(t, got, "a new task of the same id has no checkpoints")
}

func TestMemoryStoreIDs(t *testing.T) {
	ctx := context.Background()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	for _, task := range []string{"a", "b"} {
		require.NoError(t, s.Create(ctx, task))
	}
	last, err := s.Append(ctx, "a", progress.LogEvent("1"), progress.LogEvent("2"))
	require.NoError(t, err)
	assert.Equal(t, "2", last)
	last, err = s.Append(ctx, "a", progress.LogEvent("3"))
	require.NoError(t, err)
	assert.Equal(t, "3", last)
	last, err = s.Append(ctx, "b", progress.LogEvent("1"))
	require.NoError(t, err)
	assert.Equal(t, "1", last, "ids are counted per task")

	events, err := s.Events(ctx, "a", "")
	require.NoError(t, err)
	var ids []string
	for _, e := range events {
		ids = append(ids, e.ID)
		assert.Equal(t, e.ID, e.Step.Message)
	}
	assert.Equal(t, []string{"1", "2", "3"}, ids)

	last, err = s.Append(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, "3", last, "appending nothing returns the last id")
}

func TestMemoryStoreAfterIDForms(t *testing.T) {
	ctx := context.Background()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(ctx, "task"))
	_, err := s.Append(ctx, "task", progress.LogEvent("a"), progress.LogEvent("b"), progress.LogEvent("c"))
	require.NoError(t, err)

	valid := []struct {
		after string
		want  int
	}{
		{"", 3},
		{"0", 3},
		{"1", 2},
		{"02", 1},
		{"3", 0},
		{"4", 0},
		{"9223372036854775807", 0},
	}
	for _, tt := range valid {
		t.Run("valid "+tt.after, func(t *testing.T) {
			events, err := s.Events(ctx, "task", tt.after)
			require.NoError(t, err)
			assert.Len(t, events, tt.want)
		})
	}

	malformed := []string{"-1", "+1", "1.0", "1e3", " 1", "1 ", "0x10", "1_000", "abc", "\u0663", "9223372036854775808", "18446744073709551616"}
	for _, after := range malformed {
		t.Run(fmt.Sprintf("malformed %q", after), func(t *testing.T) {
			_, err := s.Events(ctx, "task", after)
			assert.ErrorIs(t, err, progress.ErrBadEventID, "Events")
			ch, err := s.Subscribe(ctx, "task", after)
			assert.ErrorIs(t, err, progress.ErrBadEventID, "Subscribe")
			assert.Nil(t, ch)
		})
	}
}

func TestMemoryStoreSubscribeAheadWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(ctx, "task"))
	_, err := s.Append(ctx, "task", progress.LogEvent("1"), progress.LogEvent("2"))
	require.NoError(t, err)

	ch, err := s.Subscribe(ctx, "task", "4")
	require.NoError(t, err)
	for i := 3; i <= 6; i++ {
		_, err := s.Append(ctx, "task", progress.LogEvent(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	_, err = s.Append(ctx, "task", progress.Event{Type: progress.EventState, State: progress.StateSuccess})
	require.NoError(t, err)

	var got []string
	for e := range ch {
		got = append(got, e.ID)
	}
	assert.Equal(t, []string{"5", "6", "7"}, got, "a subscriber ahead of the log gets the events after its id")
}

func TestMemoryStoreRetention(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedStore(t, time.Hour)

	require.NoError(t, s.Create(ctx, "old"))
	require.NoError(t, s.Create(ctx, "busy"))
	clock.Advance(40 * time.Minute)
	require.NoError(t, s.Create(ctx, "young"))
	_, err := s.Append(ctx, "busy", progress.LogEvent("still here"))
	require.NoError(t, err)
	clock.Advance(30 * time.Minute) // old: 70m, busy: 30m, young: 30m

	_, _, err = s.Snapshot(ctx, "old")
	assert.ErrorIs(t, err, progress.ErrNotFound, "a task past its retention is gone")
	_, err = s.Events(ctx, "old", "")
	assert.ErrorIs(t, err, progress.ErrNotFound)
	_, err = s.Append(ctx, "old", progress.LogEvent("late"))
	assert.ErrorIs(t, err, progress.ErrNotFound)
	for _, id := range []string{"busy", "young"} {
		_, _, err := s.Snapshot(ctx, id)
		assert.NoError(t, err, "%s is within its retention", id)
	}
	assert.Equal(t, 2, s.Len())
	assert.NoError(t, s.Create(ctx, "old"), "the id of a dropped task is free again")

	clock.Advance(30 * time.Minute) // busy and young: 60m
	events, err := s.Events(ctx, "old", "")
	require.NoError(t, err)
	assert.Empty(t, events, "the new task of that id starts empty")
	assert.Equal(t, 1, s.Len())
}

func TestMemoryStoreDefaultRetention(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedStore(t, 0)
	require.NoError(t, s.Create(ctx, "task"))
	clock.Advance(progress.DefaultRetention - time.Second)
	assert.Equal(t, 1, s.Len())
	clock.Advance(time.Second)
	assert.Equal(t, 0, s.Len())
	assert.Equal(t, 24*time.Hour, progress.DefaultRetention)
}

func TestMemoryStoreMemoryIsBounded(t *testing.T) {
	ctx := context.Background()
	s, clock := newClockedStore(t, time.Minute)
	for i := range 10_000 {
		id := fmt.Sprint("task-", i)
		require.NoError(t, s.Create(ctx, id))
		_, err := s.Append(ctx, id, progress.LogEvent("work"), progress.Event{Type: progress.EventState, State: progress.StateSuccess})
		require.NoError(t, err)
		clock.Advance(time.Second)
		require.LessOrEqual(t, s.Len(), 60, "tasks kept after %d created", i+1)
	}
	// A minute after the first of them, the last 60 tasks are 1s to 60s
	// old: the oldest has reached its retention.
	assert.Equal(t, 59, s.Len(), "the tasks of the last minute are kept")
}

func TestMemoryStoreSubscriptionEndsWhenTaskDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, clock := newClockedStore(t, time.Minute)
	require.NoError(t, s.Create(ctx, "task"))
	_, err := s.Append(ctx, "task", progress.LogEvent("one"))
	require.NoError(t, err)
	ch, err := s.Subscribe(ctx, "task", "")
	require.NoError(t, err)
	e := <-ch
	assert.Equal(t, "1", e.ID)

	clock.Advance(time.Minute)
	require.NoError(t, s.Create(ctx, "other"), "any call sweeps expired tasks")
	select {
	case _, ok := <-ch:
		assert.False(t, ok, "no event after the task was dropped")
	case <-ctx.Done():
		require.Fail(t, "subscription of a dropped task did not end")
	}
}

func TestMemoryStoreCancelledContext(t *testing.T) {
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(context.Background(), "task"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	assert.ErrorIs(t, s.Create(ctx, "other"), context.Canceled)
	_, err := s.Append(ctx, "task", progress.LogEvent("x"))
	assert.ErrorIs(t, err, context.Canceled)
	_, _, err = s.Snapshot(ctx, "task")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = s.Events(ctx, "task", "")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = s.Subscribe(ctx, "task", "")
	assert.ErrorIs(t, err, context.Canceled)

	events, err := s.Events(context.Background(), "task", "")
	require.NoError(t, err)
	assert.Empty(t, events, "nothing was recorded with a cancelled context")
}

func TestMemoryStoreSubscriptionsFreeTheirGoroutine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(ctx, "task"))
	baseline := runtime.NumGoroutine()

	subCtx, cancelSubs := context.WithCancel(ctx)
	var chans []<-chan progress.Event
	for range 10 {
		ch, err := s.Subscribe(subCtx, "task", "")
		require.NoError(t, err)
		chans = append(chans, ch)
	}
	require.Greater(t, runtime.NumGoroutine(), baseline, "one goroutine per subscription while it lasts")
	cancelSubs()
	for _, ch := range chans {
		for range ch {
		}
	}
	for runtime.NumGoroutine() > baseline {
		select {
		case <-ctx.Done():
			require.Failf(t, "goroutines leaked", "%d running, %d before", runtime.NumGoroutine(), baseline)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// FuzzMemoryStoreAfterID checks the parsing of event ids that come from
// outside (Last-Event-ID): any string either gives exactly the events after
// it or ErrBadEventID, and never a panic.
func FuzzMemoryStoreAfterID(f *testing.F) {
	for _, seed := range []string{"", "0", "1", "3", "4", "007", "-1", "+2", "1e2", "x", " 2", "99999999999999999999"} {
		f.Add(seed)
	}
	ctx := context.Background()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(f, s.Create(ctx, "task"))
	_, err := s.Append(ctx, "task", progress.LogEvent("a"), progress.LogEvent("b"), progress.LogEvent("c"))
	require.NoError(f, err)
	all, err := s.Events(ctx, "task", "")
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, after string) {
		events, err := s.Events(ctx, "task", after)
		if err != nil {
			if !errors.Is(err, progress.ErrBadEventID) {
				t.Fatalf("Events(%q): %v", after, err)
			}
			return
		}
		n, convErr := strconv.ParseUint(after, 10, 64)
		if after != "" && convErr != nil {
			t.Fatalf("Events(%q) accepted an id that is not a decimal integer", after)
		}
		want := all[min(int(min(n, 3)), len(all)):]
		if len(events) != len(want) {
			t.Fatalf("Events(%q) gave %d events, want %d", after, len(events), len(want))
		}
		for i := range events {
			if events[i].ID != want[i].ID {
				t.Fatalf("Events(%q)[%d] has id %s, want %s", after, i, events[i].ID, want[i].ID)
			}
		}
	})
}

// TestMemoryStoreRefusesNegativeRetention: a negative Retention can only
// be a mistake; NewMemoryStore panics naming the field, as the Redis
// backend's New fails on one, instead of taking the default.
func TestMemoryStoreRefusesNegativeRetention(t *testing.T) {
	assert.PanicsWithValue(t, "progress: NewMemoryStore: MemoryConfig.Retention -1h0m0s is negative (zero means DefaultRetention)",
		func() { progress.NewMemoryStore(progress.MemoryConfig{Retention: -time.Hour}) })
}
