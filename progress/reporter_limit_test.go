package progress_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

func TestEventSize(t *testing.T) {
	tests := []struct {
		name string
		e    progress.Event
		want int
	}{
		{"status", progress.Event{Type: progress.EventStatus, Status: "abc"}, 3},
		{"progress: the percentage is not counted", progress.Event{Type: progress.EventProgress, Progress: 50, Status: "ab"}, 2},
		{"token", progress.Event{Type: progress.EventToken, Token: "tok"}, 3},
		{"log", progress.LogEvent("hello"), 5},
		{"tool result: names and JSON", progress.ToolResultEvent("step", "tool", map[string]int{"a": 1}), 4 + 4 + len(`{"a":1}`)},
		{"success: status and result", progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(`"r"`)}, 9 + 3},
		{"nothing but a state", progress.Event{Type: progress.EventState, State: progress.StateProgress}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.e.Size())
		})
	}
}

func newLimitedReporter(t *testing.T, limit int) (*progress.TaskReporter, progress.Store, *bytes.Buffer) {
	t.Helper()
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, store.Create(context.Background(), "t"))
	var logs bytes.Buffer
	r := progress.NewTaskReporter(store, "t", slog.New(slog.NewTextHandler(&logs, nil)))
	r.SetMaxReportBytes(limit)
	// No limit on the run, which would be 16 times limit: the tests
	// of the run's limit set their own.
	r.SetMaxRunReportBytes(-1)
	return r, store, &logs
}

// TestTaskReporterDropsReportOverLimit: a report over the limit is
// replaced by a log entry saying so, a report at the limit is kept, and
// the first drop alone is logged.
func TestTaskReporterDropsReportOverLimit(t *testing.T) {
	r, store, logs := newLimitedReporter(t, 10)
	r.Log(strings.Repeat("a", 10))
	r.Log(strings.Repeat("b", 11))
	r.ToolResult("s", "t", strings.Repeat("c", 20))
	r.Status(strings.Repeat("d", 11))
	r.Report(progress.Event{Type: progress.EventToken, Token: strings.Repeat("e", 11)})
	require.NoError(t, r.Flush(context.Background()))

	var got []string
	for _, e := range storedEvents(t, store, "t") {
		require.Equal(t, progress.EventStep, e.Type)
		got = append(got, e.Step.Message)
	}
	assert.Equal(t, []string{
		"aaaaaaaaaa",
		"report dropped: log entry of 11 bytes, over the limit of 10 bytes per report",
		`report dropped: tool result (step "s", tool "t") of 24 bytes, over the limit of 10 bytes per report`,
		"report dropped: status line of 11 bytes, over the limit of 10 bytes per report",
		"report dropped: token of 11 bytes, over the limit of 10 bytes per report",
	}, got)
	assert.Equal(t, 1, strings.Count(logs.String(), "a report over the size limit was replaced"), logs.String())
	assert.Contains(t, logs.String(), "bytes=11")
	assert.Contains(t, logs.String(), "limit=10")
}

func TestTaskReporterDefaultLimit(t *testing.T) {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	require.NoError(t, store.Create(context.Background(), "t"))
	r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
	r.Log(strings.Repeat("a", progress.DefaultMaxReportBytes+1))
	require.NoError(t, r.Flush(context.Background()))
	events := storedEvents(t, store, "t")
	require.Len(t, events, 1)
	assert.Equal(t, "report dropped: log entry of 1048577 bytes, over the limit of 1048576 bytes per report", events[0].Step.Message)

	for _, n := range []int{0, progress.DefaultMaxReportBytes} {
		r.SetMaxReportBytes(n)
		r.Log(strings.Repeat("a", progress.DefaultMaxReportBytes))
	}
	r.SetMaxReportBytes(-1)
	r.Log(strings.Repeat("a", 2*progress.DefaultMaxReportBytes))
	require.NoError(t, r.Flush(context.Background()))
	events = storedEvents(t, store, "t")
	require.Len(t, events, 4)
	for _, e := range events[1:] {
		assert.False(t, strings.HasPrefix(e.Step.Message, "report dropped"), "kept: %d bytes", len(e.Step.Message))
	}
}

// TestTaskReporterResultOverLimit: Succeed refuses a result over the
// limit and records nothing, so that the task can still end; a result at
// the limit is recorded with its status, which is not counted with it.
func TestTaskReporterResultOverLimit(t *testing.T) {
	r, store, _ := newLimitedReporter(t, 10)
	err := r.Succeed(context.Background(), strings.Repeat("r", 9)) // 11 bytes of JSON
	require.ErrorIs(t, err, progress.ErrTooLarge)
	assert.EqualError(t, err, "progress: report too large: result of 11 bytes is over the limit of 10 bytes per report")
	assert.Empty(t, storedEvents(t, store, "t"), "nothing recorded")

	require.NoError(t, r.Succeed(context.Background(), strings.Repeat("r", 8))) // 10 bytes
	snap, _, err := store.Snapshot(context.Background(), "t")
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Equal(t, "Completed", snap.Details.Status)
	assert.Equal(t, `"rrrrrrrr"`, string(snap.Details.FinalResult))
}

// TestTaskReporterCutsStatusOfStateChange: Start and Fail cut their
// status line to the limit, with a mark of the cut: a task's end is
// never dropped.
func TestTaskReporterCutsStatusOfStateChange(t *testing.T) {
	r, store, _ := newLimitedReporter(t, 40)
	require.NoError(t, r.Start(context.Background(), strings.Repeat("s", 41)))
	snap, _, err := store.Snapshot(context.Background(), "t")
	require.NoError(t, err)
	assert.Equal(t, "ssssssssssssssss ... (cut from 41 bytes)", snap.Details.Status)

	require.NoError(t, r.Fail(context.Background(), strings.Repeat("f", 100)))
	snap, _, err = store.Snapshot(context.Background(), "t")
	require.NoError(t, err)
	assert.Equal(t, progress.StateFailure, snap.State)
	assert.Equal(t, "fffffffffffffff ... (cut from 100 bytes)", snap.Details.Status)
	assert.Len(t, snap.Details.Status, 40)
}

// TestTaskReporterBatchesWithinLimit: the events that wait for an Append
// go in batches of at most the limit in bytes (or one event), so that
// many reports at the limit never make one huge Append.
func TestTaskReporterBatchesWithinLimit(t *testing.T) {
	store := newGatedStore(t)
	r := progress.NewTaskReporter(store, "t", nil)
	r.SetMaxReportBytes(10)
	r.SetMaxRunReportBytes(-1) // the run's limit is not what this tests
	r.Status("first")          // held at the gate
	store.waitEntered(t)
	for _, s := range []string{"1234", "5678", "90", "abcdefghij", "k", "l"} {
		r.Status(s)
	}
	store.release(t)
	require.NoError(t, r.Flush(context.Background()))
	assert.Equal(t, []int{1, 3, 1, 2}, store.appendSizes())
	assert.Equal(t, []string{"first", "1234", "5678", "90", "abcdefghij", "k", "l"}, statuses(t, store))
}

// TestTaskReporterBoundsPendingBytes: past 16 reports at the limit
// waiting, reporting waits for the store. It runs in a synctest bubble:
// once every goroutine there is blocked, the reports made are those that
// did not wait, whatever the machine's speed.
func TestTaskReporterBoundsPendingBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &stuckStore{Store: progress.NewMemoryStore(progress.MemoryConfig{}), gate: make(chan struct{})}
		require.NoError(t, store.Create(context.Background(), "t"))
		r := progress.NewTaskReporter(store, "t", nil)
		r.SetMaxReportBytes(10)
		// No limit on the run, which would be 160 bytes: the reports
		// here go past it.
		r.SetMaxRunReportBytes(-1)
		r.Token("first") // its Append waits at the gate

		var made atomic.Int32
		reported := make(chan struct{})
		go func() {
			defer close(reported)
			for range 17 {
				r.Token("0123456789")
				made.Add(1)
			}
		}()
		synctest.Wait()
		assert.Equal(t, int32(16), made.Load(), "16 reports at the limit wait for the store; the 17th waits itself")
		close(store.gate)
		<-reported
		require.NoError(t, r.Flush(context.Background()))
		assert.Len(t, storedEvents(t, store, "t"), 18)
	})
}

// stuckStore is a store whose Appends wait until gate is closed. Unlike
// gatedStore, it does not watch the Append's context, which the reporter
// takes from a source shared by the tests (and by synctest bubbles).
type stuckStore struct {
	progress.Store
	gate chan struct{}
}

func (s *stuckStore) Append(ctx context.Context, id string, events ...progress.Event) (string, error) {
	<-s.gate
	return s.Store.Append(ctx, id, events...)
}

// TestTaskReporterSucceedJSON: SucceedJSON records the JSON it is given
// as it is, as Succeed records what EncodeData makes of a result; the
// store refuses JSON that is not valid, and the task goes on; the limit
// holds as for Succeed.
func TestTaskReporterSucceedJSON(t *testing.T) {
	r, store, _ := newLimitedReporter(t, 20)
	ctx := context.Background()
	err := r.SucceedJSON(ctx, json.RawMessage(`{"a":`))
	require.ErrorIs(t, err, progress.ErrInvalidEvent)
	err = r.SucceedJSON(ctx, json.RawMessage(`"`+strings.Repeat("r", 20)+`"`))
	require.ErrorIs(t, err, progress.ErrTooLarge)
	assert.Empty(t, storedEvents(t, store, "t"), "nothing recorded")

	require.NoError(t, r.SucceedJSON(ctx, json.RawMessage(`{"a": [1, 2]}`)))
	snap, _, err := store.Snapshot(ctx, "t")
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, snap.State)
	assert.Equal(t, "Completed", snap.Details.Status)
	assert.Equal(t, `{"a": [1, 2]}`, string(snap.Details.FinalResult))
}

// TestTaskReporterRunLimit: past the limit of the run, the first report
// is replaced by a log entry saying so and later text is dropped, while
// a Report holding a state change (a worker's opening of a run), the
// percentages of progress reports and the end are recorded uncounted;
// the first drop alone is logged.
func TestTaskReporterRunLimit(t *testing.T) {
	r, store, logs := newLimitedReporter(t, 10)
	// Each report counts its text and ReportOverheadBytes.
	const limit = 25 + 3*progress.ReportOverheadBytes
	r.SetMaxRunReportBytes(limit)
	r.Report(progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"},
		progress.LogEvent("attempt 2"))
	r.Log(strings.Repeat("a", 10))
	r.Status(strings.Repeat("b", 10))
	r.Token(strings.Repeat("c", 5)) // 25: at the limit
	r.Log("d")                      // past it
	r.Log("e")
	r.Status("f")
	r.Token("g")
	r.ToolResult("s", "t", "h")
	r.Progress(50, "i")
	r.Report(progress.LogEvent("j"))
	require.NoError(t, r.Succeed(context.Background(), "done"))

	var got []string
	for _, e := range storedEvents(t, store, "t") {
		switch e.Type {
		case progress.EventStep:
			got = append(got, "log "+e.Step.Message)
		case progress.EventStatus:
			got = append(got, "status "+e.Status)
		case progress.EventToken:
			got = append(got, "token "+e.Token)
		case progress.EventProgress:
			got = append(got, fmt.Sprintf("progress %d %q", e.Progress, e.Status))
		case progress.EventState:
			got = append(got, fmt.Sprintf("state %s %s", e.State, e.Result))
		}
	}
	assert.Equal(t, []string{
		"state PROGRESS ",
		"log attempt 2",
		"log aaaaaaaaaa",
		"status bbbbbbbbbb",
		"token ccccc",
		fmt.Sprintf("log report dropped: log entry of 1 bytes would take this run past its limit of %d bytes of reports ", limit) +
			"(WorkerConfig.MaxRunReportBytes); its later log entries, tool results, status lines and tokens are dropped too, " +
			"its progress, state and result are still recorded",
		`progress 50 ""`,
		`state SUCCESS "done"`,
	}, got)
	assert.Equal(t, 1, strings.Count(logs.String(), "the reports of a run passed its limit"), logs.String())
	assert.Contains(t, logs.String(), fmt.Sprintf("limit=%d", limit))
}

// TestTaskReporterRunLimitSettings: zero means the default limit of a
// run, a negative value none.
func TestTaskReporterRunLimitSettings(t *testing.T) {
	count := func(set int, reports int) int {
		r, store, _ := newLimitedReporter(t, 0)
		r.SetMaxRunReportBytes(set)
		big := strings.Repeat("x", progress.DefaultMaxReportBytes)
		for range reports {
			r.Log(big)
		}
		require.NoError(t, r.Flush(context.Background()))
		n := 0
		for _, e := range storedEvents(t, store, "t") {
			if e.Step.Message == big {
				n++
			}
		}
		return n
	}
	// With ReportOverheadBytes counted for each, one report at the
	// limit fewer than RunReports fits.
	assert.Equal(t, progress.RunReports-1, count(0, progress.RunReports+2))
	assert.Equal(t, progress.RunReports+2, count(-1, progress.RunReports+2))
}

// TestTaskReporterRunLimitFollowsReportLimit: unset, the limit of the
// run is RunReports times the limit of one report, as a worker's is
// (queue.WorkerConfig.MaxRunReportBytes), whichever is set first: none
// when a report has none, and a report within a raised limit is never
// refused for the run's.
func TestTaskReporterRunLimitFollowsReportLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name         string
		reportLimit  int
		lines, bytes int // the flow logs lines of bytes
		kept         int
	}{
		{"NoReportLimit", -1, progress.RunReports + 1, mib, progress.RunReports + 1},
		{"RaisedReportLimit", 20 * mib, 1, 17 * mib, 1},
		{"LoweredReportLimit", 100, progress.RunReports + 4, 100, progress.RunReports * 100 / (100 + progress.ReportOverheadBytes)},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, runFirst := range []bool{false, true} {
				store := progress.NewMemoryStore(progress.MemoryConfig{})
				require.NoError(t, store.Create(context.Background(), "t"))
				r := progress.NewTaskReporter(store, "t", slog.New(slog.DiscardHandler))
				if runFirst {
					r.SetMaxRunReportBytes(0)
				}
				r.SetMaxReportBytes(c.reportLimit)
				if !runFirst {
					r.SetMaxRunReportBytes(0)
				}
				line := strings.Repeat("x", c.bytes)
				for range c.lines {
					r.Log(line)
				}
				require.NoError(t, r.Flush(context.Background()))
				kept := 0
				for _, e := range storedEvents(t, store, "t") {
					if e.Type == progress.EventStep && e.Step.Message == line {
						kept++
					}
				}
				assert.Equal(t, c.kept, kept, "run's limit set first: %v", runFirst)
			}
		})
	}
}

// TestTaskReporterRunLimitOverReportLimit: a report over the limit of
// one report that meets the limit of the run is named as it was in the
// entry saying the run passed its limit, not as the entry that would
// have taken its place; past the run's limit, such a report is dropped
// as the others are (a progress report keeps its percentage) without a
// warning that an entry took its place.
func TestTaskReporterRunLimitOverReportLimit(t *testing.T) {
	t.Run("Passing", func(t *testing.T) {
		r, store, logs := newLimitedReporter(t, 10)
		r.SetMaxRunReportBytes(20 + 2*progress.ReportOverheadBytes) // two reports of 10 bytes
		r.Log(strings.Repeat("a", 10))
		r.Log(strings.Repeat("b", 10))
		r.ToolResult("s", "t", strings.Repeat("c", 40)) // 44 bytes with its names and quotes
		require.NoError(t, r.Flush(context.Background()))
		msgs := stepMessagesOf(t, store)
		require.Len(t, msgs, 3)
		assert.True(t, strings.HasPrefix(msgs[2], `report dropped: tool result (step "s", tool "t") of 44 bytes would take this run past its limit of 148 bytes`), msgs[2])
		assert.Equal(t, 1, strings.Count(logs.String(), "the reports of a run passed its limit"), logs.String())
	})
	t.Run("Past", func(t *testing.T) {
		r, store, logs := newLimitedReporter(t, 10)
		r.SetMaxRunReportBytes(20 + 2*progress.ReportOverheadBytes) // two reports of 10 bytes
		r.Log(strings.Repeat("a", 10))
		r.Log(strings.Repeat("b", 10))
		r.Log(strings.Repeat("c", 10)) // past the run's limit
		r.Log(strings.Repeat("d", 11))
		r.Progress(70, strings.Repeat("e", 11))
		require.NoError(t, r.Flush(context.Background()))
		var got []string
		for _, e := range storedEvents(t, store, "t") {
			switch e.Type {
			case progress.EventStep:
				got = append(got, "log "+brief(e.Step.Message))
			case progress.EventProgress:
				got = append(got, fmt.Sprintf("progress %d %q", e.Progress, e.Status))
			}
		}
		assert.Equal(t, []string{
			"log " + strings.Repeat("a", 10),
			"log " + strings.Repeat("b", 10),
			"log report dropped: log entry of 10 bytes would take this run past its limit of 148 bytes of reports",
			`progress 70 ""`,
		}, got)
		assert.NotContains(t, logs.String(), "a report over the size limit was replaced")
	})
}

// TestTaskReporterRunLimitCountsEvents: each report counts
// ReportOverheadBytes as well as its text, so that empty reports are
// bounded too, and past the limit a progress report is recorded only
// when its percentage changes, ProgressPastRunLimit times at most.
func TestTaskReporterRunLimitCountsEvents(t *testing.T) {
	countOf := func(store progress.Store, typ progress.EventType) int {
		n := 0
		for _, e := range storedEvents(t, store, "t") {
			if e.Type == typ {
				n++
			}
		}
		return n
	}
	t.Run("EmptyLogs", func(t *testing.T) {
		r, store, _ := newLimitedReporter(t, 10)
		r.SetMaxRunReportBytes(10 * progress.ReportOverheadBytes)
		for range 1000 {
			r.Log("")
		}
		require.NoError(t, r.Flush(context.Background()))
		assert.Equal(t, 11, countOf(store, progress.EventStep), "ten empty entries, then one saying why the rest is not")
	})
	t.Run("ProgressPastLimit", func(t *testing.T) {
		r, store, _ := newLimitedReporter(t, 10)
		r.SetMaxRunReportBytes(progress.ReportOverheadBytes)
		r.Log("")
		r.Log("") // past the limit
		r.Progress(70, "a")
		r.Progress(70, "b") // the same percentage: dropped
		r.Progress(71, "")
		require.NoError(t, r.Flush(context.Background()))
		var got []int
		for _, e := range storedEvents(t, store, "t") {
			if e.Type == progress.EventProgress {
				got = append(got, e.Progress)
			}
		}
		assert.Equal(t, []int{70, 71}, got)
		for i := range 1000 {
			r.Progress(i%2, "") // changes each time
		}
		require.NoError(t, r.Flush(context.Background()))
		assert.Equal(t, progress.ProgressPastRunLimit, countOf(store, progress.EventProgress))
	})
}

// stepMessagesOf returns the messages of the step events of task "t"
// in store.
func stepMessagesOf(t *testing.T, store progress.Store) []string {
	t.Helper()
	var msgs []string
	for _, e := range storedEvents(t, store, "t") {
		if e.Type == progress.EventStep {
			msgs = append(msgs, e.Step.Message)
		}
	}
	return msgs
}

// brief returns s up to its first parenthesis, trimmed.
func brief(s string) string {
	if i := strings.Index(s, " ("); i >= 0 {
		return s[:i]
	}
	return s
}
