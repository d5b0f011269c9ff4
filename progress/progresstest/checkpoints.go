package progresstest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// CheckpointBackend is a progress store that keeps checkpoints too, as
// both stores of this module do.
type CheckpointBackend interface {
	progress.Store
	progress.CheckpointStore
}

// RunCheckpoints runs the conformance suite of progress.CheckpointStore
// against the stores newStore returns, called once per subtest as in Run:
//
//	func TestCheckpointConformance(t *testing.T) {
//		progresstest.RunCheckpoints(t, func(t *testing.T) progresstest.CheckpointBackend {
//			return mystore.New(...)
//		})
//	}
func RunCheckpoints(t *testing.T, newStore func(t *testing.T) CheckpointBackend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s CheckpointBackend)
	}{
		{"SaveAndRead", testCheckpointSaveAndRead},
		{"SameKeyReplaces", testCheckpointReplace},
		{"UnknownTask", testCheckpointUnknownTask},
		{"RefusedOnceFinished", testCheckpointFinished},
		{"InvalidRefused", testCheckpointInvalid},
		{"KeysAndOutputsKeptExactly", testCheckpointExact},
		{"ResultsAreCopies", testCheckpointCopies},
		{"TasksAreSeparate", testCheckpointTasksSeparate},
		{"LeaveEventsAlone", testCheckpointEventsAlone},
		{"ConcurrentSaves", testCheckpointConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			require.NotNil(t, s, "newStore returned nil")
			tt.fn(t, s)
		})
	}
}

// checkpoint returns a checkpoint of attempt 1 with the given key and
// output.
func checkpoint(key, output string) progress.Checkpoint {
	return progress.Checkpoint{Key: key, Attempt: 1, Output: json.RawMessage(output)}
}

// newCheckpointTask creates a task in s and returns its id.
func newCheckpointTask(t *testing.T, s CheckpointBackend) string {
	t.Helper()
	id := newTaskID(t)
	require.NoError(t, s.Create(testContext(t), id))
	return id
}

func testCheckpointSaveAndRead(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)

	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.NotNil(t, got, "a task without checkpoints gives an empty map, not nil")
	assert.Empty(t, got)

	first := checkpoint("fetch", `{"pages":3}`)
	second := progress.Checkpoint{Key: "summarize", Attempt: 2, Output: json.RawMessage(`"a summary"`)}
	require.NoError(t, s.SaveCheckpoint(ctx, id, first))
	require.NoError(t, s.SaveCheckpoint(ctx, id, second))

	got, err = s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"fetch": first, "summarize": second}, got)
}

func testCheckpointReplace(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	require.NoError(t, s.SaveCheckpoint(ctx, id, checkpoint("step", `"old"`)))
	newer := progress.Checkpoint{Key: "step", Attempt: 3, Output: json.RawMessage(`"new"`)}
	require.NoError(t, s.SaveCheckpoint(ctx, id, newer))

	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"step": newer}, got, "the last save of a key wins")
}

func testCheckpointUnknownTask(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newTaskID(t)
	err := s.SaveCheckpoint(ctx, id, checkpoint("step", `1`))
	assert.ErrorIs(t, err, progress.ErrNotFound, "SaveCheckpoint of an unknown task")
	_, err = s.Checkpoints(ctx, id)
	assert.ErrorIs(t, err, progress.ErrNotFound, "Checkpoints of an unknown task")

	// Nothing was left behind that would make the id look known.
	require.NoError(t, s.Create(ctx, id))
	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, got, "a refused save recorded nothing")
}

func testCheckpointFinished(t *testing.T, s CheckpointBackend) {
	for _, end := range []progress.Event{successEvent(`"done"`), failureEvent("boom")} {
		t.Run(string(end.State), func(t *testing.T) {
			ctx := testContext(t)
			id := newCheckpointTask(t, s)
			kept := checkpoint("before", `true`)
			require.NoError(t, s.SaveCheckpoint(ctx, id, kept))
			_, err := s.Append(ctx, id, end)
			require.NoError(t, err)

			err = s.SaveCheckpoint(ctx, id, checkpoint("after", `true`))
			assert.ErrorIs(t, err, progress.ErrFinished)
			err = s.SaveCheckpoint(ctx, id, checkpoint("before", `false`))
			assert.ErrorIs(t, err, progress.ErrFinished)

			got, err := s.Checkpoints(ctx, id)
			require.NoError(t, err, "checkpoints stay readable after the end")
			assert.Equal(t, map[string]progress.Checkpoint{"before": kept}, got)
		})
	}
}

func testCheckpointInvalid(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	tests := []struct {
		name string
		c    progress.Checkpoint
	}{
		{"empty key", checkpoint("", `1`)},
		{"key too long", checkpoint(strings.Repeat("k", progress.MaxCheckpointKeyLen+1), `1`)},
		{"attempt 0", progress.Checkpoint{Key: "k", Output: json.RawMessage(`1`)}},
		{"negative attempt", progress.Checkpoint{Key: "k", Attempt: -1, Output: json.RawMessage(`1`)}},
		{"no output", progress.Checkpoint{Key: "k", Attempt: 1}},
		{"output not JSON", checkpoint("k", `{"unclosed":`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.SaveCheckpoint(ctx, id, tt.c)
			assert.ErrorIs(t, err, progress.ErrInvalidCheckpoint)
		})
	}
	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, got, "refused checkpoints recorded nothing")

	longest := checkpoint(strings.Repeat("k", progress.MaxCheckpointKeyLen), `1`)
	require.NoError(t, s.SaveCheckpoint(ctx, id, longest), "a key of MaxCheckpointKeyLen bytes")
}

func testCheckpointExact(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	keys := []string{
		"plain", "with space", "colon:and/slash", "{braces}", "new\nline", "tab\there",
		"ünïcødé 名前", `quote"d`, " ", "lcflow/llm/Step/0123456789abcdef/0",
	}
	outputs := []string{
		`"text"`, `{"b": 1, "a": [1, 2.50, null]}`, `  [ ]  `, `"line\nbreak"`, `null`, `-0.0e+10`,
		`{"nested": {"deep": "\u00e9\ud83d\ude00"}}`, `"` + strings.Repeat("x", 1<<20) + `"`, `true`, `0`,
	}
	want := map[string]progress.Checkpoint{}
	for i, k := range keys {
		c := progress.Checkpoint{Key: k, Attempt: i + 1, Output: json.RawMessage(outputs[i])}
		require.NoError(t, s.SaveCheckpoint(ctx, id, c), "key %q", k)
		want[k] = c
	}
	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for k, c := range want {
		g, ok := got[k]
		if !assert.True(t, ok, "key %q", k) {
			continue
		}
		assert.Equal(t, c.Key, g.Key)
		assert.Equal(t, c.Attempt, g.Attempt, "attempt of %q", k)
		assert.Equal(t, string(c.Output), string(g.Output), "output of %q is kept byte for byte", k)
	}
}

func testCheckpointCopies(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	out := []byte(`"abc"`)
	require.NoError(t, s.SaveCheckpoint(ctx, id, progress.Checkpoint{Key: "k", Attempt: 1, Output: out}))
	copy(out, `"xyz"`) // the caller's buffer, reused

	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, `"abc"`, string(got["k"].Output))
	c := got["k"]
	copy(c.Output, `"zzz"`)
	got["other"] = checkpoint("other", `1`)

	again, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"k": checkpoint("k", `"abc"`)}, again)
}

func testCheckpointTasksSeparate(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	a, b := newCheckpointTask(t, s), newCheckpointTask(t, s)
	require.NoError(t, s.SaveCheckpoint(ctx, a, checkpoint("step", `"a"`)))
	require.NoError(t, s.SaveCheckpoint(ctx, b, checkpoint("step", `"b"`)))
	got, err := s.Checkpoints(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"step": checkpoint("step", `"a"`)}, got)
	got, err = s.Checkpoints(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"step": checkpoint("step", `"b"`)}, got)
}

func testCheckpointEventsAlone(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	_, err := s.Append(ctx, id, progress.LogEvent("before"))
	require.NoError(t, err)
	snapBefore, lastBefore, err := s.Snapshot(ctx, id)
	require.NoError(t, err)
	eventsBefore, err := s.Events(ctx, id, "")
	require.NoError(t, err)

	require.NoError(t, s.SaveCheckpoint(ctx, id, checkpoint("step", `{"x":1}`)))

	snap, last, err := s.Snapshot(ctx, id)
	require.NoError(t, err)
	assertSnapshot(t, snapBefore, snap, "a checkpoint is not part of the snapshot")
	assert.Equal(t, lastBefore, last, "a checkpoint is not an event")
	events, err := s.Events(ctx, id, "")
	require.NoError(t, err)
	assertSameContent(t, eventsBefore, events)

	// And events leave the checkpoints alone.
	_, err = s.Append(ctx, id, progress.LogEvent("after"))
	require.NoError(t, err)
	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]progress.Checkpoint{"step": checkpoint("step", `{"x":1}`)}, got)
}

func testCheckpointConcurrent(t *testing.T, s CheckpointBackend) {
	ctx := testContext(t)
	id := newCheckpointTask(t, s)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w%d-step%d", w, i)
				if err := s.SaveCheckpoint(ctx, id, checkpoint(key, fmt.Sprintf(`[%d,%d]`, w, i))); err != nil {
					errs <- fmt.Errorf("%s: %w", key, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	got, err := s.Checkpoints(ctx, id)
	require.NoError(t, err)
	require.Len(t, got, writers*each)
	for w := range writers {
		for i := range each {
			key := fmt.Sprintf("w%d-step%d", w, i)
			assert.Equal(t, fmt.Sprintf(`[%d,%d]`, w, i), string(got[key].Output), key)
		}
	}
}
