package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// droppedPrefix starts the log entry that takes the place of a report
// over the worker's MaxReportBytes.
const droppedPrefix = "report dropped: "

// brief returns s, or its start and length when it is long, for the
// messages of failed assertions.
func brief(s string) string {
	if len(s) <= 200 {
		return s
	}
	return fmt.Sprintf("%.80q... (%d bytes)", s, len(s))
}

// runReportLimit checks the limit on the size of one report
// (WorkerConfig.MaxReportBytes): a report at the limit is recorded as it
// is, one over it is replaced by a log entry saying so, a result over it
// fails the task, and a flow that reports far too much harms no other.
func runReportLimit(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	t.Run("DefaultLimit", func(t *testing.T) {
		h := newHarness(t, newBackends)
		at := strings.Repeat("a", progress.DefaultMaxReportBytes)
		over := strings.Repeat("o", progress.DefaultMaxReportBytes+1)
		h.reg.MustRegister("dump", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			ft.Progress.Log(at)
			ft.Progress.Log(over)
			ft.Progress.Log("after")
			return "done", nil
		}))
		h.start(queue.WorkerConfig{})
		id := h.enqueue("dump", "", queue.EnqueueOptions{})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		msgs := stepMessages(snap)
		require.Len(t, msgs, 3)
		assert.True(t, msgs[0] == at, "a log entry of exactly DefaultMaxReportBytes is recorded as it is (got %d bytes)", len(msgs[0]))
		assert.Equal(t, fmt.Sprintf("report dropped: log entry of %d bytes, over the limit of %d bytes per report",
			progress.DefaultMaxReportBytes+1, progress.DefaultMaxReportBytes), brief(msgs[1]))
		assert.Equal(t, "after", msgs[2], "reports after a dropped one are recorded")
	})

	t.Run("ConfiguredLimit", func(t *testing.T) {
		h := newHarness(t, newBackends)
		const limit = 100
		at, over := strings.Repeat("a", limit), strings.Repeat("o", limit+1)
		h.reg.MustRegister("dump", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			ft.Progress.Status(at)
			ft.Progress.Status(over)
			ft.Progress.Progress(40, over)
			ft.Progress.Token(at)
			ft.Progress.Token(over)
			// The data of a tool result counts as its JSON: a string
			// of limit-2 bytes and its quotes.
			ft.Progress.ToolResult("", "", at[2:])
			ft.Progress.ToolResult("research", "fetch", json.RawMessage(`"`+over+`"`))
			ft.Progress.Log(at)
			return "done", nil
		}))
		h.start(queue.WorkerConfig{MaxReportBytes: limit})
		id := h.enqueue("dump", "", queue.EnqueueOptions{})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		var got []string
		for _, s := range snap.Details.StepResults {
			if s.Type == progress.StepToolResult {
				got = append(got, "tool "+string(s.Data))
				continue
			}
			got = append(got, s.Message)
		}
		assert.Equal(t, []string{
			"report dropped: status line of 101 bytes, over the limit of 100 bytes per report",
			"report dropped: progress report of 101 bytes, over the limit of 100 bytes per report",
			"report dropped: token of 101 bytes, over the limit of 100 bytes per report",
			`tool "` + at[2:] + `"`,
			`report dropped: tool result (step "research", tool "fetch") of 116 bytes, over the limit of 100 bytes per report`,
			at,
		}, got)
		events, err := h.store.Events(context.Background(), id, "")
		require.NoError(t, err)
		var tokens, statuses []string
		for _, e := range events {
			switch e.Type {
			case progress.EventToken:
				tokens = append(tokens, e.Token)
			case progress.EventStatus:
				statuses = append(statuses, e.Status)
			}
		}
		assert.Equal(t, []string{at}, tokens, "the token at the limit is sent, the one over it is not")
		assert.Equal(t, []string{at}, statuses, "the status at the limit is recorded, the one over it is not")
	})

	t.Run("RunLimitDefault", func(t *testing.T) {
		// The review's case: a flow that logs a report at the limit
		// forty times wrote 40 MiB into its task's log, which every
		// snapshot read and every SSE client that (re)connects from
		// the start paid for. The default limit of a run, RunReports
		// times the limit of a report (16 MiB by default, which the
		// progress package's tests count), stops it; its progress,
		// state and result are still recorded, and a watcher sees the
		// end. The worker sets the limit of a report and leaves the
		// run's unset, the path the defaults take, with a sixteenth of
		// their bytes: 16 MiB through the store took 10 s of each
		// run of the suite under the race detector, and the one over
		// no limit (NoRunLimit) still sends 20 MiB.
		h := newHarness(t, newBackends)
		require.Equal(t, 16<<20, progress.DefaultMaxRunReportBytes)
		const report = progress.DefaultMaxReportBytes / 16
		const limit = progress.RunReports * report
		big := strings.Repeat("l", report)
		h.reg.MustRegister("dump", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			for range 40 {
				ft.Progress.Log(big)
			}
			ft.Progress.Progress(70, "almost")
			ft.Progress.Token(big)
			return "done", nil
		}))
		id := h.enqueue("dump", "", queue.EnqueueOptions{})
		// The watcher is sent 1 MiB, 64 KiB a message, and reads them as
		// they come. On a loaded machine under the race detector the run
		// and the checks below (which read this log and snapshot) took
		// tens of seconds each at 16 MiB: its four times long to end
		// count from after them, as they did not when it failed.
		watched := h.followFor(id, 4*long)
		h.start(queue.WorkerConfig{MaxReportBytes: report})

		snap := h.waitTerminalWithin(id, 4*long)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, `"done"`, string(snap.Details.FinalResult))
		events, err := h.store.Events(context.Background(), id, "")
		require.NoError(t, err)
		logged, snapped := eventBytes(events), snapshotBytes(t, snap)
		t.Logf("the task's log holds %d events, %d bytes of text; its snapshot is %d bytes of JSON", len(events), logged, snapped)
		assert.LessOrEqual(t, logged, limit+1024, "the run's reports stop at its limit")
		assert.LessOrEqual(t, snapped, limit+4096, "and so does its snapshot")
		msgs := stepMessages(snap)
		// Each report counts ReportOverheadBytes as well as its text,
		// so that 15 at the limit fit, not 16.
		require.Len(t, msgs, 16, "15 log entries at the limit of a report, then one saying why the rest is not")
		for _, m := range msgs[:15] {
			require.True(t, m == big, "%s", brief(m))
		}
		assert.Equal(t, fmt.Sprintf("report dropped: log entry of %d bytes would take this run past its limit of %d bytes of reports "+
			"(WorkerConfig.MaxRunReportBytes); its later log entries, tool results, status lines and tokens are dropped too, "+
			"its progress, state and result are still recorded", report, limit), msgs[15])
		var progressed bool
		for _, e := range events {
			assert.NotEqual(t, progress.EventToken, e.Type, "no token past the limit")
			progressed = progressed || e.Type == progress.EventProgress && e.Progress == 70
		}
		assert.True(t, progressed, "the progress past the limit is recorded")

		seen := watched()
		require.NotEmpty(t, seen)
		last := seen[len(seen)-1]
		assert.True(t, last.Terminal() && last.State == progress.StateSuccess, "the watcher sees the end: %+v", last.Type)
	})

	t.Run("RunLimitConfigured", func(t *testing.T) {
		// Past the limit of the run, no text is recorded: neither log
		// entries, tool results, status lines nor tokens, whatever
		// their size; progress percentages are, without their lines,
		// and the task fails as it would have.
		h := newHarness(t, newBackends)
		// Each report counts its text and ReportOverheadBytes (64).
		const limit = 600
		a := strings.Repeat("a", 100)
		h.reg.MustRegister("chatty", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			ft.Progress.Log(a)
			ft.Progress.Status(a)
			ft.Progress.Token(a) // 3 × 164 = 492 bytes so far
			ft.Progress.Log(a)   // 656: dropped, and said so
			ft.Progress.Log("x") // 557 would fit, but the run is past its limit
			ft.Progress.Status("y")
			ft.Progress.Token("z")
			ft.Progress.ToolResult("research", "fetch", "w")
			ft.Progress.Progress(60, "reading")
			return nil, flow.Permanent(errors.New("model refused"))
		}))
		id := h.enqueue("chatty", "", queue.EnqueueOptions{MaxAttempts: 2})
		watched := h.follow(id)
		h.start(queue.WorkerConfig{MaxReportBytes: 100, MaxRunReportBytes: limit})

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "model refused", snap.Details.Status, "the failure's reason is recorded past the limit")
		assert.Equal(t, 60, snap.Details.Progress, "so is the progress")
		assert.Equal(t, []string{a,
			"report dropped: log entry of 100 bytes would take this run past its limit of 600 bytes of reports " +
				"(WorkerConfig.MaxRunReportBytes); its later log entries, tool results, status lines and tokens are dropped too, " +
				"its progress, state and result are still recorded",
		}, stepMessages(snap))
		assert.Len(t, snap.Details.StepResults, 2, "no tool result past the limit")
		events, err := h.store.Events(context.Background(), id, "")
		require.NoError(t, err)
		var texts []string
		for _, e := range events {
			switch e.Type {
			case progress.EventToken:
				texts = append(texts, "token "+e.Token)
			case progress.EventStatus:
				texts = append(texts, "status "+e.Status)
			case progress.EventProgress:
				texts = append(texts, fmt.Sprintf("progress %d %q", e.Progress, e.Status))
			}
		}
		assert.Equal(t, []string{"status " + a, "token " + a, `progress 60 ""`}, texts)
		seen := watched()
		require.NotEmpty(t, seen)
		last := seen[len(seen)-1]
		assert.True(t, last.Terminal() && last.State == progress.StateFailure, "the watcher sees the end: %+v", last.Type)
	})

	t.Run("RunLimitEachRun", func(t *testing.T) {
		// The limit is a run's: a retry records as much again, and
		// its progress and result past its own limit.
		h := newHarness(t, newBackends)
		const limit = 400 // two reports of 100 bytes and 64 of overhead each
		a := strings.Repeat("a", 100)
		h.reg.MustRegister("twice", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			for range 3 {
				ft.Progress.Log(a)
			}
			if ft.Attempt == 1 {
				return nil, errors.New("model overloaded")
			}
			return "done", nil
		}))
		id := h.enqueue("twice", "", queue.EnqueueOptions{MaxAttempts: 2})
		h.start(queue.WorkerConfig{MaxReportBytes: 100, MaxRunReportBytes: limit})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, `"done"`, string(snap.Details.FinalResult))
		var kept, said int
		for _, m := range stepMessages(snap) {
			switch {
			case m == a:
				kept++
			case strings.HasPrefix(m, "report dropped: log entry of 100 bytes would take this run past its limit of 400 bytes"):
				said++
			}
		}
		assert.Equal(t, 4, kept, "two log entries of each run are recorded")
		assert.Equal(t, 2, said, "and each run says once that it dropped the third")
	})

	t.Run("RunLimitEvents", func(t *testing.T) {
		// The review's case: a flow that logged "" 200,000 times
		// carried no text, so the limit of its run never counted it,
		// and it left 200,000 events and a snapshot of 10.6 MB. Past
		// the limit, a flow that reported a progress as often as it
		// liked was not bounded either. Each report counts a fixed
		// overhead as well as its text, and past the limit a progress
		// is recorded only when its percentage changes, a bounded
		// number of times.
		const limit = 64 * 100          // room for about 100 empty reports
		const bound = 100 + 1 + 100 + 4 // counted, the drop's entry, progress past the limit, start and end
		for _, c := range []struct {
			name   string
			report func(p progress.Reporter, i int)
		}{
			{"EmptyLogs", func(p progress.Reporter, _ int) { p.Log("") }},
			{"EmptyTokens", func(p progress.Reporter, _ int) { p.Token("") }},
			{"Progress", func(p progress.Reporter, i int) { p.Progress(i%100, "") }},
		} {
			t.Run(c.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				h.reg.MustRegister("chatty", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					for i := range 5000 {
						c.report(ft.Progress, i)
					}
					return "done", nil
				}))
				h.start(queue.WorkerConfig{MaxReportBytes: 100, MaxRunReportBytes: limit})
				id := h.enqueue("chatty", "", queue.EnqueueOptions{})
				snap := h.waitTerminal(id)
				require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
				events, err := h.store.Events(context.Background(), id, "")
				require.NoError(t, err)
				t.Logf("the task's log holds %d events, %d bytes as JSON; its snapshot is %d bytes of JSON",
					len(events), eventsJSONBytes(t, events), snapshotBytes(t, snap))
				assert.LessOrEqual(t, len(events), bound, "the run's events are bounded")
				assert.LessOrEqual(t, snapshotBytes(t, snap), 3*limit, "and so is its snapshot")
			})
		}
	})

	t.Run("NoRunLimit", func(t *testing.T) {
		// Each configuration gets a harness of its own, so that the
		// worker that runs the task is the one configured; each flow
		// reports more than the limit of the run would be without it.
		for _, c := range []struct {
			name string
			cfg  queue.WorkerConfig
			line int // bytes of each of the flow's 20 log entries
		}{
			// 2,000 bytes, where 100-byte reports would allow 1,600.
			{"MaxRunReportBytesNegative", queue.WorkerConfig{MaxReportBytes: 100, MaxRunReportBytes: -1}, 100},
			// 20 MiB, past the default of 16 MiB.
			{"MaxReportBytesNegative", queue.WorkerConfig{MaxReportBytes: -1}, progress.DefaultMaxReportBytes},
		} {
			t.Run(c.name, func(t *testing.T) {
				h := newHarness(t, newBackends)
				line := strings.Repeat("a", c.line)
				h.reg.MustRegister("chatty", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
					for range 20 {
						ft.Progress.Log(line)
					}
					return "done", nil
				}))
				h.start(c.cfg)
				id := h.enqueue("chatty", "", queue.EnqueueOptions{})
				// 20 MiB of reports took longer than long under the
				// race detector on a loaded machine (the suite with
				// delays, on Redis).
				snap := h.waitTerminalWithin(id, 4*long)
				require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
				// A worker starved for longer than its heartbeats'
				// window stops its flow, and the task runs again
				// (see WorkerConfig.Heartbeat): the log keeps what
				// each attempt reported, each attempt after the
				// first opening with a line "attempt n starts".
				// None holds more than the flow's 20 entries, and
				// the last one, which ended the task, all of them.
				var runs [][]string
				run := []string{}
				for _, m := range stepMessages(snap) {
					if strings.HasPrefix(m, "attempt ") {
						runs, run = append(runs, run), []string{}
						continue
					}
					require.True(t, m == line, "%s", brief(m))
					run = append(run, m)
				}
				for i, r := range runs {
					require.LessOrEqual(t, len(r), 20, "attempt %d doubled log entries", i+1)
				}
				if len(runs) > 0 {
					t.Logf("the task ran %d times", len(runs)+1)
				}
				require.Len(t, run, 20, "no log entry is dropped, none says so")
			})
		}
	})

	t.Run("NoLimit", func(t *testing.T) {
		h := newHarness(t, newBackends)
		big := strings.Repeat("b", progress.DefaultMaxReportBytes+1)
		h.reg.MustRegister("dump", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			ft.Progress.Log(big)
			return "done", nil
		}))
		h.start(queue.WorkerConfig{MaxReportBytes: -1})
		id := h.enqueue("dump", "", queue.EnqueueOptions{})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		msgs := stepMessages(snap)
		require.Len(t, msgs, 1)
		assert.True(t, msgs[0] == big, "with a negative MaxReportBytes nothing is dropped (got %.80q)", msgs[0])
	})

	t.Run("ResultOverLimit", func(t *testing.T) {
		h := newHarness(t, newBackends)
		const limit = 100
		var runs attempts
		h.reg.MustRegister("big-result", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			runs.add(ft.Attempt)
			return strings.Repeat("r", limit-1), nil // 101 bytes of JSON with its quotes
		}))
		h.reg.MustRegister("fitting-result", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			return strings.Repeat("r", limit-2), nil // 100 bytes of JSON
		}))
		h.start(queue.WorkerConfig{MaxReportBytes: limit})
		big := h.enqueue("big-result", "", queue.EnqueueOptions{MaxAttempts: 3})
		fits := h.enqueue("fitting-result", "", queue.EnqueueOptions{MaxAttempts: 3})

		snap := h.waitTerminal(big)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, "result of 101 bytes is over the limit of 100 bytes per report", snap.Details.Status)
		assert.Nil(t, snap.Details.FinalResult)
		assert.Equal(t, []int{1}, runs.get(), "a result over the limit is not retried")
		dead := h.waitBuried(big)
		assert.Equal(t, snap.Details.Status, dead.Reason)

		snap = h.waitTerminal(fits)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, `"`+strings.Repeat("r", limit-2)+`"`, string(snap.Details.FinalResult))
	})

	t.Run("LongErrorIsCut", func(t *testing.T) {
		h := newHarness(t, newBackends)
		const limit = 200
		long := "model said: " + strings.Repeat("e", 10*limit)
		h.reg.MustRegister("loud", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			return nil, errors.New(long)
		}))
		h.start(queue.WorkerConfig{MaxReportBytes: limit})
		id := h.enqueue("loud", "", queue.EnqueueOptions{MaxAttempts: 2})

		snap := h.waitTerminal(id)
		assert.Equal(t, progress.StateFailure, snap.State)
		status := snap.Details.Status
		assert.LessOrEqual(t, len(status), limit, "the reason is cut to the limit: %q", status)
		assert.True(t, strings.HasPrefix(status, "failed after 2 attempts: model said: eee"), status)
		assert.Contains(t, status, " ... (cut from ")
		msgs := stepMessages(snap)
		require.NotEmpty(t, msgs)
		assert.LessOrEqual(t, len(msgs[0]), limit, "the retry's log entry is cut to the limit: %q", msgs[0])
		assert.True(t, strings.HasPrefix(msgs[0], "attempt 1 failed: model said: eee"), msgs[0])
		dead := h.waitBuried(id)
		assert.Equal(t, status, dead.Reason, "the dead letter's reason is the FAILURE's status")
	})

	t.Run("StepOutputOverLimit", func(t *testing.T) {
		// A step's output over the limit is not recorded as a
		// checkpoint (it would reach the store as a report would): a
		// later attempt runs the step again, and the steps after it,
		// as for any output the run could not record.
		h := newHarness(t, newBackends)
		if _, keeps := h.store.(progress.CheckpointStore); !keeps {
			t.Skip("the progress store keeps no checkpoints")
		}
		const limit = 100
		var fits, big, after atomic.Int32
		h.reg.MustRegister("steps", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			for _, s := range []struct {
				name string
				n    *atomic.Int32
				out  string
			}{
				{"fits", &fits, strings.Repeat("f", limit-2)}, // 100 bytes of JSON
				{"big", &big, strings.Repeat("b", limit-1)},   // 101
				{"after", &after, "small"},
			} {
				if _, err := flow.Step(ctx, ft, s.name, func(context.Context) (string, error) {
					s.n.Add(1)
					return s.out, nil
				}); err != nil {
					return nil, err
				}
			}
			if ft.Attempt == 1 {
				return nil, errors.New("model overloaded")
			}
			return "done", nil
		}))
		h.start(queue.WorkerConfig{MaxReportBytes: limit})
		id := h.enqueue("steps", "", queue.EnqueueOptions{MaxAttempts: 2})

		snap := h.waitTerminal(id)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, int32(1), fits.Load(), "an output at the limit is recorded and replayed")
		assert.Equal(t, int32(2), big.Load(), "an output over the limit is not recorded: the step runs again")
		assert.Equal(t, int32(2), after.Load(), "nor is any later output of that run")
		assert.Contains(t, stepMessages(snap), "fits: replayed from attempt 1")
	})

	t.Run("OtherFlowsUnaffected", func(t *testing.T) {
		// The audit's case: three 40 MB log lines held a Redis worker's
		// heartbeats past their window, and it stopped every flow it
		// ran. Under the default limit they are dropped before they
		// reach the store.
		h := newHarness(t, newBackends)
		huge := strings.Repeat("h", 40<<20)
		dumped := make(chan struct{})
		var calmRuns, dumpRuns attempts
		h.reg.MustRegister("dump", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			dumpRuns.add(ft.Attempt)
			for range 3 {
				ft.Progress.Log(huge)
			}
			if ft.Attempt == 1 {
				close(dumped)
			}
			return "dumped", nil
		}))
		h.reg.MustRegister("calm", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
			calmRuns.add(ft.Attempt)
			ft.Progress.Log("started")
			select {
			case <-dumped:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
			ft.Progress.Log("still here")
			return "calm", nil
		}))
		h.start(queue.WorkerConfig{Concurrency: 2})
		calm := h.enqueue("calm", "", queue.EnqueueOptions{})
		dump := h.enqueue("dump", "", queue.EnqueueOptions{})

		snap := h.waitTerminal(calm)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		assert.Equal(t, []string{"started", "still here"}, stepMessages(snap))
		assert.Equal(t, []int{1}, calmRuns.get(), "the calm flow ran once, not stopped and handed back")

		snap = h.waitTerminal(dump)
		require.Equal(t, progress.StateSuccess, snap.State, "status %q", snap.Details.Status)
		msgs := stepMessages(snap)
		require.Len(t, msgs, 3)
		for _, m := range msgs {
			assert.True(t, strings.HasPrefix(m, droppedPrefix), "%.80q", m)
		}
		assert.Equal(t, []int{1}, dumpRuns.get())
	})
}

// eventBytes returns the bytes of text and JSON events carry (see
// progress.Event.Size).
func eventBytes(events []progress.Event) int {
	n := 0
	for _, e := range events {
		n += e.Size()
	}
	return n
}

// eventsJSONBytes returns the size of events as JSON, one by one: about
// what the task's event log holds for them.
func eventsJSONBytes(t *testing.T, events []progress.Event) int {
	t.Helper()
	n := 0
	for _, e := range events {
		b, err := json.Marshal(e)
		require.NoError(t, err)
		n += len(b)
	}
	return n
}

// snapshotBytes returns the size of snap as JSON: what a snapshot read
// costs, and what an SSE client gets as it connects.
func snapshotBytes(t *testing.T, snap progress.Snapshot) int {
	t.Helper()
	b, err := json.Marshal(snap)
	require.NoError(t, err)
	return len(b)
}

// follow subscribes to task id's events from its first, reads them as
// they come, and returns a function that waits for the subscription to
// end (it ends after the terminal event) and returns what it delivered.
func (h *harness) follow(id string) func() []progress.Event {
	h.t.Helper()
	return h.followFor(id, long)
}

// followFor is follow with d for the subscription to end in, counted
// from the call of the function it returns: the caller calls it once the
// task has ended. The subscription is read from the start, as an SSE
// client reads its stream, so that neither the run nor the caller's own
// checks before that call hold it up or count against d; its context
// has no deadline, so that it can only end by the task's end.
func (h *harness) followFor(id string, d time.Duration) func() []progress.Event {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := h.store.Subscribe(ctx, id, "")
	if err != nil {
		cancel()
		require.NoError(h.t, err, "Subscribe %s", id)
	}
	var got []progress.Event
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for e := range ch {
			got = append(got, e)
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		<-ended
	})
	return func() []progress.Event {
		h.t.Helper()
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-ended:
		case <-timer.C:
			cancel()
			<-ended
			require.Failf(h.t, "the subscription did not end", "not within %v after the task's end; it delivered %d events", d, len(got))
		}
		return got
	}
}
