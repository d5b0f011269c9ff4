package queuetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

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
