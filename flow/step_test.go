package flow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

// checkpointStore is a MemoryStore whose checkpoint methods count their
// calls and fail on demand.
type checkpointStore struct {
	*progress.MemoryStore
	reads, saves       atomic.Int32
	failRead, failSave atomic.Pointer[error]
}

func (s *checkpointStore) Checkpoints(ctx context.Context, taskID string) (map[string]progress.Checkpoint, error) {
	s.reads.Add(1)
	if err := s.failRead.Load(); err != nil {
		return nil, *err
	}
	return s.MemoryStore.Checkpoints(ctx, taskID)
}

func (s *checkpointStore) SaveCheckpoint(ctx context.Context, taskID string, c progress.Checkpoint) error {
	s.saves.Add(1)
	if err := s.failSave.Load(); err != nil {
		return *err
	}
	return s.MemoryStore.SaveCheckpoint(ctx, taskID, c)
}

// stepEnv is one task of a checkpoint store, run attempt after attempt.
type stepEnv struct {
	store *checkpointStore
	id    string
	logs  *bytes.Buffer
}

func newStepEnv(t *testing.T) *stepEnv {
	t.Helper()
	s := &checkpointStore{MemoryStore: progress.NewMemoryStore(progress.MemoryConfig{})}
	require.NoError(t, s.Create(t.Context(), "task-1"))
	return &stepEnv{store: s, id: "task-1", logs: &bytes.Buffer{}}
}

// attempt returns the Task of the given attempt, reporting to a new
// Recorder.
func (e *stepEnv) attempt(n int) (*flow.Task, *progress.Recorder) {
	rec := progress.NewRecorder()
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	return &flow.Task{
		ID: e.id, Attempt: n, Progress: rec,
		Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{Store: e.store, TaskID: e.id, Attempt: n, Logger: logger}),
	}, rec
}

// counted returns a step function that counts its calls and returns out.
func counted[T any](calls *int, out T) func(context.Context) (T, error) {
	return func(context.Context) (T, error) {
		*calls++
		return out, nil
	}
}

func logMessages(rec *progress.Recorder) []string {
	var out []string
	for _, st := range rec.Snapshot().Details.StepResults {
		if st.Type == progress.StepLog {
			out = append(out, st.Message)
		}
	}
	return out
}

type page struct {
	URL   string   `json:"url"`
	Words int      `json:"words"`
	Tags  []string `json:"tags"`
}

func TestStepReplaysWhatAnEarlierAttemptRecorded(t *testing.T) {
	ctx := t.Context()
	e := newStepEnv(t)
	pages := []page{{URL: "https://a.example", Words: 120, Tags: []string{"x"}}, {URL: "https://b.example"}}
	var fetches, summaries int

	t1, rec1 := e.attempt(1)
	got, err := flow.Step(ctx, t1, "fetch pages", counted(&fetches, pages))
	require.NoError(t, err)
	assert.Equal(t, pages, got)
	_, err = flow.Step(ctx, t1, "summarize", func(context.Context) (string, error) {
		summaries++
		return "", errors.New("model overloaded")
	})
	require.Error(t, err, "the attempt fails at its second step")
	assert.Empty(t, logMessages(rec1), "a step that runs reports nothing of its own")
	assert.Zero(t, e.store.reads.Load(), "a first attempt reads no checkpoints")

	t2, rec2 := e.attempt(2)
	got, err = flow.Step(ctx, t2, "fetch pages", counted(&fetches, []page(nil)))
	require.NoError(t, err)
	assert.Equal(t, pages, got, "the recorded output, decoded")
	summary, err := flow.Step(ctx, t2, "summarize", counted(&summaries, "two pages"))
	require.NoError(t, err)
	assert.Equal(t, "two pages", summary)

	assert.Equal(t, 1, fetches, "the completed step ran once over two attempts")
	assert.Equal(t, 2, summaries, "the failed step was not recorded: it ran again")
	assert.Equal(t, []string{"fetch pages: replayed from attempt 1"}, logMessages(rec2))
	assert.Equal(t, int32(1), e.store.reads.Load(), "the second attempt read the checkpoints once")

	t3, rec3 := e.attempt(3)
	for _, name := range []string{"fetch pages", "summarize"} {
		_, err := flow.Step(ctx, t3, name, func(context.Context) (any, error) {
			t.Fatalf("step %q ran a third time", name)
			return nil, nil
		})
		require.NoError(t, err)
	}
	assert.Equal(t, []string{"fetch pages: replayed from attempt 1", "summarize: replayed from attempt 2"}, logMessages(rec3))
}

func TestStepNames(t *testing.T) {
	ctx := t.Context()

	t.Run("a completed name cannot be used again in the run", func(t *testing.T) {
		task, _ := newStepEnv(t).attempt(1)
		calls := 0
		_, err := flow.Step(ctx, task, "once", counted(&calls, 1))
		require.NoError(t, err)
		_, err = flow.Step(ctx, task, "once", counted(&calls, 2))
		assert.ErrorIs(t, err, flow.ErrDuplicateStep)
		assert.Equal(t, 1, calls, "the duplicate did not run")
	})

	t.Run("a failed step may be tried again under its name", func(t *testing.T) {
		e := newStepEnv(t)
		task, _ := e.attempt(1)
		tries := 0
		for {
			_, err := flow.Step(ctx, task, "flaky", func(context.Context) (int, error) {
				tries++
				if tries < 3 {
					return 0, errors.New("not yet")
				}
				return 42, nil
			})
			if err == nil {
				break
			}
			require.NotErrorIs(t, err, flow.ErrDuplicateStep)
		}
		assert.Equal(t, 3, tries)
		saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
		require.NoError(t, err)
		assert.Equal(t, `42`, string(saved["flaky"].Output))
	})

	t.Run("a name running in another goroutine is a duplicate", func(t *testing.T) {
		task, _ := newStepEnv(t).attempt(1)
		started, release := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := flow.Step(ctx, task, "slow", func(context.Context) (int, error) {
				close(started)
				<-release
				return 1, nil
			})
			assert.NoError(t, err)
		})
		<-started
		_, err := flow.Step(ctx, task, "slow", func(context.Context) (int, error) { return 2, nil })
		assert.ErrorIs(t, err, flow.ErrDuplicateStep)
		close(release)
		wg.Wait()
	})

	t.Run("empty and overlong names are refused", func(t *testing.T) {
		task, _ := newStepEnv(t).attempt(1)
		for _, name := range []string{"", strings.Repeat("n", progress.MaxCheckpointKeyLen+1)} {
			calls := 0
			_, err := flow.Step(ctx, task, name, counted(&calls, 1))
			assert.ErrorIs(t, err, flow.ErrInvalidStepName)
			assert.Zero(t, calls)
		}
		_, err := flow.Step(ctx, task, strings.Repeat("n", progress.MaxCheckpointKeyLen), func(context.Context) (int, error) { return 1, nil })
		assert.NoError(t, err)
	})

	t.Run("without checkpoints Step only runs the function", func(t *testing.T) {
		task := &flow.Task{ID: "t", Attempt: 2, Progress: progress.NewRecorder()}
		calls := 0
		for range 2 {
			v, err := flow.Step(ctx, task, "same", counted(&calls, "v"))
			require.NoError(t, err)
			assert.Equal(t, "v", v)
		}
		assert.Equal(t, 2, calls)
	})
}

func TestStepWhenCodeChanged(t *testing.T) {
	ctx := t.Context()
	e := newStepEnv(t)
	t1, _ := e.attempt(1)
	_, err := flow.Step(ctx, t1, "count", func(context.Context) (string, error) { return "three", nil })
	require.NoError(t, err)
	_, err = flow.Step(ctx, t1, "kept", func(context.Context) (string, error) { return "old code's output", nil })
	require.NoError(t, err)

	// The next attempt runs new code: "count" now returns an int, "kept"
	// kept its name and type.
	t2, rec := e.attempt(2)
	calls := 0
	n, err := flow.Step(ctx, t2, "count", counted(&calls, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, n, "an output that no longer decodes runs the step again")
	assert.Equal(t, 1, calls)
	kept, err := flow.Step(ctx, t2, "kept", counted(&calls, "new code's output"))
	require.NoError(t, err)
	assert.Equal(t, "old code's output", kept, "same name and type: replayed, whatever the code does now")
	assert.Equal(t, []string{"kept: replayed from attempt 1"}, logMessages(rec))
	assert.Contains(t, e.logs.String(), "no longer decodes")

	saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
	require.NoError(t, err)
	assert.Equal(t, progress.Checkpoint{Key: "count", Attempt: 2, Output: []byte(`3`)}, saved["count"], "the new output replaces the old")
}

func TestStepStoreFailures(t *testing.T) {
	ctx := t.Context()
	down := errors.New("store down")

	t.Run("a read that fails fails the step, and the next step reads again", func(t *testing.T) {
		e := newStepEnv(t)
		t1, _ := e.attempt(1)
		_, err := flow.Step(ctx, t1, "paid", func(context.Context) (int, error) { return 7, nil })
		require.NoError(t, err)

		t2, _ := e.attempt(2)
		e.store.failRead.Store(&down)
		calls := 0
		_, err = flow.Step(ctx, t2, "paid", counted(&calls, 8))
		assert.ErrorIs(t, err, down)
		assert.Zero(t, calls, "not run: it may have been paid for already")
		e.store.failRead.Store(nil)
		v, err := flow.Step(ctx, t2, "paid", counted(&calls, 8))
		require.NoError(t, err, "the name was freed by the failure")
		assert.Equal(t, 7, v)
		assert.Zero(t, calls)
	})

	t.Run("a save that fails keeps the output and stops recording", func(t *testing.T) {
		e := newStepEnv(t)
		task, _ := e.attempt(1)
		e.store.failSave.Store(&down)
		v, err := flow.Step(ctx, task, "first", func(context.Context) (string, error) { return "one", nil })
		require.NoError(t, err, "the step succeeded; only its record failed")
		assert.Equal(t, "one", v)
		e.store.failSave.Store(nil)
		_, err = flow.Step(ctx, task, "second", func(context.Context) (string, error) { return "two", nil })
		require.NoError(t, err)
		assert.Equal(t, int32(1), e.store.saves.Load(), "nothing recorded after the failure")
		assert.Contains(t, e.logs.String(), "store down")
		saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
		require.NoError(t, err)
		assert.Empty(t, saved, "a later attempt would not replay the second step without the first")
	})

	t.Run("a task that ended meanwhile records nothing, quietly", func(t *testing.T) {
		e := newStepEnv(t)
		task, _ := e.attempt(1)
		_, err := e.store.Append(ctx, e.id, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "cancelled"})
		require.NoError(t, err)
		v, err := flow.Step(ctx, task, "late", func(context.Context) (int, error) { return 1, nil })
		require.NoError(t, err)
		assert.Equal(t, 1, v)
		assert.NotContains(t, e.logs.String(), "not recorded")
	})

	t.Run("an output that is not JSON is a permanent error", func(t *testing.T) {
		task, _ := newStepEnv(t).attempt(1)
		_, err := flow.Step(ctx, task, "chan", func(context.Context) (chan int, error) { return make(chan int), nil })
		assert.ErrorIs(t, err, flow.ErrPermanent)
	})
}

func TestStepConcurrentFirstStepsReadOnce(t *testing.T) {
	ctx := t.Context()
	e := newStepEnv(t)
	t1, _ := e.attempt(1)
	const n = 16
	for i := range n {
		_, err := flow.Step(ctx, t1, "step "+string(rune('a'+i)), func(context.Context) (int, error) { return i, nil })
		require.NoError(t, err)
	}
	t2, _ := e.attempt(2)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := flow.Step(ctx, t2, "step "+string(rune('a'+i)), func(context.Context) (int, error) { return -1, nil })
			assert.NoError(t, err)
			assert.Equal(t, i, v)
		})
	}
	wg.Wait()
	assert.Equal(t, int32(1), e.store.reads.Load())
}

// orderStore records the order of flushes and saves.
type orderStore struct {
	*progress.MemoryStore
	order *[]string
}

func (s orderStore) SaveCheckpoint(ctx context.Context, taskID string, c progress.Checkpoint) error {
	*s.order = append(*s.order, "save "+c.Key)
	return s.MemoryStore.SaveCheckpoint(ctx, taskID, c)
}

func TestStepFlushesReportsBeforeRecording(t *testing.T) {
	ctx := t.Context()
	s := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, s.Create(ctx, "task-1"))
	var order []string
	task := &flow.Task{ID: "task-1", Attempt: 1, Progress: progress.Discard, Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{
		Store: orderStore{s, &order}, TaskID: "task-1", Attempt: 1,
		Flush: func(context.Context) error {
			order = append(order, "flush")
			return errors.New("flush failed") // recorded all the same
		},
	})}
	_, err := flow.Step(ctx, task, "a", func(context.Context) (int, error) { return 1, nil })
	require.NoError(t, err)
	_, err = flow.Step(ctx, task, "b", func(context.Context) (int, error) { return 0, errors.New("no") })
	require.Error(t, err)
	assert.Equal(t, []string{"flush", "save a"}, order, "what the step reported is recorded before its output; a failed step flushes nothing")
}

// TestStepResumesDeadTask checks the steps of a task that resumes a dead
// one (CheckpointsConfig.ResumeFrom): they replay the dead task's outputs
// for the names the task has not recorded itself, record them as the
// task's own, and resume nothing from a dead task that is gone.
func TestStepResumesDeadTask(t *testing.T) {
	ctx := t.Context()
	e := newStepEnv(t)
	require.NoError(t, e.store.Create(ctx, "dead-1"))
	for _, c := range []progress.Checkpoint{
		{Key: "search", Attempt: 2, Output: json.RawMessage(`["hit"]`)},
		{Key: "answer", Attempt: 2, Output: json.RawMessage(`"old answer"`)},
	} {
		require.NoError(t, e.store.MemoryStore.SaveCheckpoint(ctx, "dead-1", c))
	}
	resumed := func(n int, from string) (*flow.Task, *progress.Recorder) {
		rec := progress.NewRecorder()
		return &flow.Task{ID: e.id, Attempt: n, Progress: rec, Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{
			Store: e.store, TaskID: e.id, Attempt: n, ResumeFrom: from, Progress: rec,
			Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
		})}, rec
	}

	// The store fails the first read: the step fails without running, and
	// the next one reads again.
	readErr := errors.New("store unreachable")
	e.store.failRead.Store(&readErr)
	t1, rec1 := resumed(1, "dead-1")
	var searches int
	_, err := flow.Step(ctx, t1, "search", counted(&searches, []string{"fresh"}))
	require.ErrorIs(t, err, readErr)
	assert.Zero(t, searches)
	e.store.failRead.Store(nil)
	hits, err := flow.Step(ctx, t1, "search", counted(&searches, []string{"fresh"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"hit"}, hits, "the dead task's output")
	assert.Zero(t, searches)
	assert.Equal(t, []string{"search: replayed from task dead-1"}, logMessages(rec1))
	own, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"search": {Key: "search", Attempt: 1, Output: json.RawMessage(`["hit"]`)}}, own,
		"the replayed output is recorded as the task's own, by its attempt")
	require.NoError(t, t1.Checkpoints.Record(ctx, "answer", "new answer"))

	// A later attempt replays the task's own outputs before the dead task's.
	t2, rec2 := resumed(2, "dead-1")
	var answers int
	answer, err := flow.Step(ctx, t2, "answer", counted(&answers, "fresh"))
	require.NoError(t, err)
	assert.Equal(t, "new answer", answer, "the task's own output wins")
	o, ok, err := t2.Checkpoints.ReplayOrigin(ctx, "search", new([]string))
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, flow.Origin{Attempt: 1}, o)
	assert.Equal(t, []string{"answer: replayed from attempt 1"}, logMessages(rec2))

	// A dead task that is gone (its retention passed) resumes nothing, and
	// the first attempt says so.
	t3, rec3 := resumed(1, "gone-1")
	fresh, err := flow.Step(ctx, t3, "fresh step", counted(&searches, "ran"))
	require.NoError(t, err)
	assert.Equal(t, "ran", fresh)
	assert.Equal(t, 1, searches)
	assert.Equal(t, []string{"resuming nothing: task gone-1 has no checkpoints (it recorded none, or they have expired)"}, logMessages(rec3))

	assert.Equal(t, "task dead-1", flow.Origin{Task: "dead-1", Attempt: 2}.String())
	assert.Equal(t, "attempt 3", flow.Origin{Attempt: 3}.String())
}

// TestStepOutputNotValidUTF8 checks that an output JSON cannot keep as it
// is (a string with bytes that are not UTF-8, which encoding/json turns
// into U+FFFD) is not recorded: a later attempt would replay other bytes
// than the step returned. The run records no later step either, as when
// the store cannot record one.
func TestStepOutputNotValidUTF8(t *testing.T) {
	ctx := t.Context()
	e := newStepEnv(t)
	t1, _ := e.attempt(1)
	digest := "\x9f\x86\xd0\x81\x88\x4c" // raw bytes in a string, as string(sum[:]) makes them
	v, err := flow.Step(ctx, t1, "digest", func(context.Context) (string, error) { return digest, nil })
	require.NoError(t, err)
	assert.Equal(t, digest, v, "the run gets the output as returned")
	_, err = flow.Step(ctx, t1, "after", func(context.Context) (string, error) { return "fine", nil })
	require.NoError(t, err)
	_, err = flow.Step(ctx, t1, "nested", func(context.Context) (map[string]string, error) { return map[string]string{"k": "caf\xe9"}, nil })
	require.NoError(t, err)
	assert.Contains(t, e.logs.String(), "not valid UTF-8")

	saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
	require.NoError(t, err)
	assert.Empty(t, saved, "nothing recorded from the lossy step on")

	t2, _ := e.attempt(2)
	calls := 0
	v, err = flow.Step(ctx, t2, "digest", counted(&calls, digest))
	require.NoError(t, err)
	assert.Equal(t, digest, v)
	assert.Equal(t, 1, calls, "run again, not replayed as other bytes")

	t.Run("valid text that looks like the escape is recorded", func(t *testing.T) {
		e := newStepEnv(t)
		t1, _ := e.attempt(1)
		for i, s := range []string{"\ufffd", `\ufffd`, `\\ufffd`, "ok \u00e9"} {
			_, err := flow.Step(ctx, t1, fmt.Sprint("s", i), func(context.Context) (string, error) { return s, nil })
			require.NoError(t, err)
		}
		saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
		require.NoError(t, err)
		assert.Len(t, saved, 4)
		t2, _ := e.attempt(2)
		for i, s := range []string{"\ufffd", `\ufffd`, `\\ufffd`, "ok \u00e9"} {
			calls := 0
			v, err := flow.Step(ctx, t2, fmt.Sprint("s", i), counted(&calls, "other"))
			require.NoError(t, err)
			assert.Equal(t, s, v)
			assert.Zero(t, calls)
		}
	})
}

// TestStepOutputOverLimit: an output over MaxOutputBytes (1 MiB unless
// set) is not recorded, and the run records nothing more; an output at
// the limit is; a negative limit means none.
func TestStepOutputOverLimit(t *testing.T) {
	ctx := t.Context()
	checkpoints := func(e *stepEnv, max int) *flow.Task {
		return &flow.Task{ID: e.id, Attempt: 1, Progress: progress.Discard, Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{
			Store: e.store, TaskID: e.id, Attempt: 1, MaxOutputBytes: max, Logger: slog.New(slog.NewTextHandler(e.logs, nil)),
		})}
	}
	at := strings.Repeat("a", progress.DefaultMaxReportBytes-2) // with its quotes
	over := at + "o"
	for _, tt := range []struct {
		name string
		max  int
		want []string
	}{
		{"default", 0, []string{"at"}},
		{"no limit", -1, []string{"at", "over", "after"}},
		{"set", progress.DefaultMaxReportBytes - 1, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newStepEnv(t)
			ft := checkpoints(e, tt.max)
			for _, s := range []struct{ name, out string }{{"at", at}, {"over", over}, {"after", "small"}} {
				v, err := flow.Step(ctx, ft, s.name, func(context.Context) (string, error) { return s.out, nil })
				require.NoError(t, err)
				assert.True(t, v == s.out, "the run gets the output as returned")
			}
			saved, err := e.store.MemoryStore.Checkpoints(ctx, e.id)
			require.NoError(t, err)
			assert.ElementsMatch(t, tt.want, slices.Collect(maps.Keys(saved)))
			if len(tt.want) < 3 {
				assert.Equal(t, 1, strings.Count(e.logs.String(), "over the size limit of a report"), e.logs.String())
			}
		})
	}
}
