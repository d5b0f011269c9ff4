package redisbackend

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/queue"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 18, 0, 0, 123, time.UTC)
	for name, task := range map[string]*queue.Task{
		"plain": {ID: "a", Flow: "poem", Inputs: json.RawMessage(`{"topic":"sea"}`), MaxAttempts: 3,
			Timeout: 15 * time.Minute, EnqueuedAt: at},
		"everything": {ID: "b", Flow: "odd flow name 7 ", Inputs: json.RawMessage(`{"a": "x y"}`), Attempt: 2,
			MaxAttempts: 1, Timeout: time.Second, EnqueuedAt: at, RunAt: at.Add(time.Hour),
			Cancelled: true, RequeuedFrom: "c0ffee"},
		"no inputs": {ID: "c", Flow: "f", EnqueuedAt: at},
		"owned": {ID: "d", Flow: "poem", Inputs: json.RawMessage(`{"topic":"sea"}`), MaxAttempts: 3,
			Timeout: time.Minute, EnqueuedAt: at, Owner: "user:ada 7 {}"},
		"owned, requeued, no inputs": {ID: "e", Flow: "7", EnqueuedAt: at, RequeuedFrom: "c0ffee", Owner: "o"},
		"traced": {ID: "f", Flow: "poem", Inputs: json.RawMessage(`{"topic":"sea"}`), EnqueuedAt: at,
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"traced with a state, owned": {ID: "g", Flow: "t 9 ", EnqueuedAt: at, Owner: "user:ada",
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", TraceState: "a=b c, d=e"},
		"resumes, traced, owned": {ID: "h", Flow: "r", EnqueuedAt: at, RequeuedFrom: "c0ffee", Resume: true, Owner: "o",
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"resumes": {ID: "i", Flow: "poem", Inputs: json.RawMessage(`{"topic":"sea"}`), EnqueuedAt: at, RequeuedFrom: "c0ffee", Resume: true},
	} {
		t.Run(name, func(t *testing.T) {
			var r record
			for _, f := range recordFields(task) {
				for i, name := range recordFieldNames {
					if name == f[0] {
						r[i] = f[1]
					}
				}
			}
			got, ok, err := decodeRecord(task.ID, r)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, task, got)
		})
	}
}

func TestRecordMalformed(t *testing.T) {
	t.Parallel()
	_, ok, err := decodeRecord("x", record{})
	assert.NoError(t, err)
	assert.False(t, ok, "no rec: no record")
	for _, rec := range []string{
		"3 0 0",              // too few numbers
		"3 0 0 0 x 0 f",      // not a number
		"3 0 0 0 9 0 f",      // flow longer than what is left
		"3 0 0 0 -1 0 f",     // negative length
		"3 0 0 0 1 9 fabc{}", // requeued_from longer than what is left
	} {
		_, _, err := decodeRecord("x", record{iRec: rec})
		assert.Error(t, err, rec)
	}
	_, _, err = decodeRecord("x", record{iRec: "3 0 0 0 1 0 f", iAttempt: "two"})
	assert.Error(t, err)
}

// TestRecordWithoutOwnerUnchanged checks that a task without an owner has
// the record it had before owners existed, and that an owned one is told
// apart by its first byte, so that records written before are read as
// they were.
func TestRecordWithoutOwnerUnchanged(t *testing.T) {
	t.Parallel()
	at := time.Unix(0, 1_700_000_000_000_000_000).UTC()
	task := &queue.Task{ID: "a", Flow: "poem", Inputs: json.RawMessage(`{"n":1}`), MaxAttempts: 3, Timeout: time.Second, EnqueuedAt: at}
	assert.Equal(t, `3 1000000000 1700000000000000000 0 4 0 poem{"n":1}`, encodeRec(task))
	task.Owner = "ada"
	assert.Equal(t, `o3 1000000000 1700000000000000000 0 4 0 3 poemada{"n":1}`, encodeRec(task))
	task.Owner, task.RequeuedFrom, task.Resume = "", "dead", true
	assert.Equal(t, `r3 1000000000 1700000000000000000 0 4 4 poemdead{"n":1}`, encodeRec(task), "a resumed task's record starts with r")
	for _, rec := range []string{
		"o3 0 0 0 1 0 f",       // no owner length
		"o3 0 0 0 1 0 9 fabc",  // owner longer than what is left
		"o3 0 0 0 1 0 -1 fabc", // negative length
		"o3 0 0 0 4611686018427387904 4611686018427387904 4611686018427387904 f", // lengths whose sum overflows
	} {
		_, _, err := decodeRecord("x", record{iRec: rec})
		assert.Error(t, err, rec)
	}
}

// TestRecordOfTracedTask checks the record of a task enqueued in a trace:
// the trace context first, marked "t", the rest as without it; and that
// a malformed trace context is an error, not a misread record.
func TestRecordOfTracedTask(t *testing.T) {
	t.Parallel()
	at := time.Unix(0, 1_700_000_000_000_000_000).UTC()
	task := &queue.Task{ID: "a", Flow: "poem", Inputs: json.RawMessage(`{"n":1}`), MaxAttempts: 3, Timeout: time.Second, EnqueuedAt: at,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "k=v"}
	assert.Equal(t, `t59 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 k=v3 1000000000 1700000000000000000 0 4 0 poem{"n":1}`, encodeRec(task))
	for _, rec := range []string{
		"t",                    // no length
		"tx 3 0 0 0 1 0 f",     // not a number
		"t99 abc3 0 0 0 1 0 f", // longer than what is left
		"t-1 3 0 0 0 1 0 f",    // negative length
	} {
		_, _, err := decodeRecord("x", record{iRec: rec})
		assert.Error(t, err, rec)
	}
}
