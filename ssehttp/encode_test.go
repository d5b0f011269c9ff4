package ssehttp

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// trickyStrings need every escape encoding/json makes.
var trickyStrings = []string{
	"", "plain", `quote " and backslash \`, "tab\tnewline\ncr\rbs\bff\f",
	"nul\x00 esc\x1b del\x7f", "<script>&amp;</script>", "line\u2028para\u2029",
	"invalid \xff\xfe utf-8", "truncated \xe2\x82", "héllo wörld ✓ 😀",
}

// TestSnapshotEncoderMatchesMarshal folds a sequence of events into a
// snapshot and checks, after each one, that the incremental encoding is
// exactly json.Marshal's.
func TestSnapshotEncoderMatchesMarshal(t *testing.T) {
	events := []progress.Event{
		{Type: progress.EventState, State: progress.StateProgress, Status: "Running"},
		{Type: progress.EventProgress, Progress: 10, Status: trickyStrings[2]},
		progress.LogEvent(trickyStrings[3]),
		progress.ToolResultEvent("search <1>", "web&co", json.RawMessage(`{ "hits" : [1, 2],  "q":"<b>" }`)),
		{Type: progress.EventStatus, Status: trickyStrings[6]},
		progress.ToolResultEvent("s", "t", map[string]any{"a": trickyStrings[7]}),
		progress.LogEvent(trickyStrings[9]),
		{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(` {"poem": "roses\n<are> red"} `)},
	}
	var enc snapshotEncoder
	snap := progress.NewSnapshot()
	check := func(step string) {
		want, err := json.Marshal(snap)
		require.NoError(t, err)
		got, err := enc.appendSnapshot(nil, snap)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), step)
	}
	check("initial")
	// The times: with nanoseconds, in a zone that is not UTC, as
	// json.Marshal writes them.
	base := time.Date(2026, 12, 4, 17, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for i, e := range events {
		e.At = base.Add(time.Duration(i) * 1001 * time.Millisecond)
		snap.Apply(e)
		check(fmt.Sprintf("after event %d (%s)", i, e.Type))
	}

	// Another snapshot with fewer steps (not a continuation) is encoded
	// from scratch.
	other := progress.NewSnapshot()
	other.Apply(progress.LogEvent("only one"))
	want, err := json.Marshal(other)
	require.NoError(t, err)
	got, err := enc.appendSnapshot(nil, other)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
}

func TestLargeMessageBuffersAreNotPooled(t *testing.T) {
	small := make([]byte, 0, 4<<10)
	assert.True(t, putBuf(&small), "a usual buffer is kept for the next message")
	large := make([]byte, 0, maxPooledBuf+1)
	assert.False(t, putBuf(&large), "a buffer grown by one large snapshot is not kept")
}
