package progress_test

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

func TestRecorderRecordsEverything(t *testing.T) {
	var r progress.Recorder // the zero value is ready
	assert.Equal(t, progress.NewSnapshot(), r.Snapshot(), "nothing reported yet")
	assert.Empty(t, r.Events())
	assert.Empty(t, r.Tokens())

	r.Status("thinking")
	r.Progress(120, "done thinking")
	r.Log("searched")
	r.ToolResult("research", "web_search", []string{"a", "b"})
	r.Token("Hel")
	r.Token("")
	r.Token("lo")

	events := r.Events()
	require.Len(t, events, 6, "the empty token is ignored")
	for i, e := range events {
		assert.Equal(t, fmt.Sprint(i+1), e.ID)
	}
	assert.Equal(t, progress.EventStatus, events[0].Type)
	assert.Equal(t, 100, events[1].Progress, "percent clamped")
	assert.Equal(t, "done thinking", events[1].Status)
	assert.Equal(t, progress.LogEvent("searched").Step, events[2].Step)
	assert.JSONEq(t, `["a","b"]`, string(events[3].Step.Data))
	assert.Equal(t, "Hel", events[4].Token)
	assert.Equal(t, "lo", events[5].Token)
	assert.Equal(t, "Hello", r.Tokens())

	snap := r.Snapshot()
	assert.Equal(t, progress.StateProgress, snap.State)
	assert.Equal(t, "done thinking", snap.Details.Status)
	assert.Equal(t, 100, snap.Details.Progress)
	require.Len(t, snap.Details.StepResults, 2)
	assert.Equal(t, progress.StepLog, snap.Details.StepResults[0].Type)
	assert.Equal(t, "web_search", snap.Details.StepResults[1].Tool)
	assert.Nil(t, snap.Details.FinalResult, "the recorder does not finish the task")
}

func TestRecorderReturnsCopies(t *testing.T) {
	r := progress.NewRecorder()
	r.ToolResult("s", "t", json.RawMessage(`{"k":"v"}`))

	events := r.Events()
	events[0].Step.Tool = "changed"
	events[0].Step.Data[2] = 'X'
	snap := r.Snapshot()
	snap.Details.StepResults[0].Tool = "changed"

	assert.Equal(t, "t", r.Events()[0].Step.Tool)
	assert.JSONEq(t, `{"k":"v"}`, string(r.Events()[0].Step.Data))
	assert.Equal(t, "t", r.Snapshot().Details.StepResults[0].Tool)
}

func TestRecorderReset(t *testing.T) {
	r := progress.NewRecorder()
	r.Log("one")
	r.Token("tok")
	r.Reset()
	assert.Empty(t, r.Events())
	assert.Empty(t, r.Tokens())
	assert.Equal(t, progress.NewSnapshot(), r.Snapshot())
	r.Log("two")
	assert.Equal(t, "1", r.Events()[0].ID, "ids start again after Reset")
}

func TestRecorderConcurrent(t *testing.T) {
	r := progress.NewRecorder()
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r.Token("x")
				r.Log(fmt.Sprintf("%d/%d", w, i))
				_ = r.Snapshot()
				_ = r.Tokens()
			}
		})
	}
	wg.Wait()

	assert.Equal(t, strings.Repeat("x", writers*each), r.Tokens())
	events := r.Events()
	require.Len(t, events, 2*writers*each)
	for i, e := range events {
		assert.Equal(t, fmt.Sprint(i+1), e.ID)
	}
	assert.Len(t, r.Snapshot().Details.StepResults, writers*each)
}
