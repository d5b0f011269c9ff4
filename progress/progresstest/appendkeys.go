package progresstest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// RunAppendKeys runs the conformance suite of append keys (see
// progress.WithAppendKey and progress.Store's Append) against the
// backends newBackend returns, called once per subtest as in Run. Run it
// for a backend that honours append keys, as both of this module do; one
// that ignores them (and never wraps progress.ErrMaybeSent) need not:
//
//	func TestAppendKeyConformance(t *testing.T) {
//		progresstest.RunAppendKeys(t, func(t *testing.T) progress.Backend {
//			return mystore.New(...)
//		})
//	}
func RunAppendKeys(t *testing.T, newBackend func(t *testing.T) progress.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b progress.Backend)
	}{
		{"SameKeyRecordsOnce", testAppendKeyOnce},
		{"KeysArePerTask", testAppendKeyPerTask},
		{"FinishedFirst", testAppendKeyFinished},
		{"EndResent", testAppendKeyEndResent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t)
			require.NotNil(t, b, "newBackend returned nil")
			tt.fn(t, b)
		})
	}
}

// testAppendKeyOnce: a keyed Append made again with the same key records
// nothing and returns the same id; one with another key, or with none,
// records its events.
func testAppendKeyOnce(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	first := appendOne(ctx, t, b, id, statusEvent("unkeyed"))

	batch := []progress.Event{progress.LogEvent("keyed"), statusEvent("keyed status")}
	k1 := progress.WithAppendKey(ctx, "reporter-1")
	last, err := b.Append(k1, id, batch...)
	require.NoError(t, err)
	require.NotEqual(t, first, last)
	again, err := b.Append(k1, id, batch...)
	require.NoError(t, err, "the same key again")
	assert.Equal(t, last, again, "the same key again: the id of its first Append")
	want := append([]progress.Event{statusEvent("unkeyed")}, batch...)
	assertSameContent(t, want, allEvents(ctx, t, b, id), "the same key again records nothing")

	k2 := progress.WithAppendKey(ctx, "reporter-2")
	next, err := b.Append(k2, id, batch...)
	require.NoError(t, err)
	assert.NotEqual(t, last, next, "another key is another call")
	again, err = b.Append(k2, id, batch...)
	require.NoError(t, err)
	assert.Equal(t, next, again)
	want = append(want, batch...)
	events := allEvents(ctx, t, b, id)
	requireUnique(t, events)
	assertSameContent(t, want, events, "each key's events once, in order")
	assert.Equal(t, next, events[len(events)-1].ID)

	snap, snapLast, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, next, snapLast)
	require.Len(t, snap.Details.StepResults, 2, "the keyed step once per key")

	// Without a key, every call records.
	plain := appendOne(ctx, t, b, id, statusEvent("plain"))
	assert.NotEqual(t, plain, appendOne(ctx, t, b, id, statusEvent("plain")))
	assert.Len(t, allEvents(ctx, t, b, id), len(want)+2)
}

// testAppendKeyPerTask: a key is compared with its own task's last key
// only.
func testAppendKeyPerTask(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	a, c := createTask(ctx, t, b), createTask(ctx, t, b)
	k := progress.WithAppendKey(ctx, "shared-key")
	_, err := b.Append(k, a, statusEvent("to a"))
	require.NoError(t, err)
	_, err = b.Append(k, c, statusEvent("to c"))
	require.NoError(t, err)
	assertSameContent(t, []progress.Event{statusEvent("to a")}, allEvents(ctx, t, b, a))
	assertSameContent(t, []progress.Event{statusEvent("to c")}, allEvents(ctx, t, b, c), "the key of another task does not count")
}

// testAppendKeyFinished: the same key again after the task has ended
// fails with ErrFinished, as any Append does then; an unknown task gives
// ErrNotFound.
func testAppendKeyFinished(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	k := progress.WithAppendKey(ctx, "before-the-end")
	_, err := b.Append(k, id, statusEvent("keyed"))
	require.NoError(t, err)
	appendOne(ctx, t, b, id, successEvent(`"done"`))
	_, err = b.Append(k, id, statusEvent("keyed"))
	require.ErrorIs(t, err, progress.ErrFinished)
	assert.Len(t, allEvents(ctx, t, b, id), 2)
	_, err = b.Append(k, newTaskID(t), statusEvent("keyed"))
	require.ErrorIs(t, err, progress.ErrNotFound)
}

// testAppendKeyEndResent: a keyed call that ended the task, made again
// with the same key, records nothing and returns the same id, although
// the task has ended (its first call ended it); made with another key,
// it fails with ErrFinished.
func testAppendKeyEndResent(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, statusEvent("running"))
	end := []progress.Event{progress.LogEvent("last words"), successEvent(`"done"`)}
	k := progress.WithAppendKey(ctx, "the-end")
	last, err := b.Append(k, id, end...)
	require.NoError(t, err)
	again, err := b.Append(k, id, end...)
	require.NoError(t, err, "the call that ended the task, made again")
	assert.Equal(t, last, again, "the id of its first Append")
	want := append([]progress.Event{statusEvent("running")}, end...)
	assertSameContent(t, want, allEvents(ctx, t, b, id), "the end once")
	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Len(t, snap.Details.StepResults, 1)

	_, err = b.Append(progress.WithAppendKey(ctx, "another-end"), id, successEvent(`"again"`))
	require.ErrorIs(t, err, progress.ErrFinished, "another key is another call")
	_, err = b.Append(ctx, id, successEvent(`"again"`))
	require.ErrorIs(t, err, progress.ErrFinished, "so is no key")
	assert.Len(t, allEvents(ctx, t, b, id), len(want))
}
