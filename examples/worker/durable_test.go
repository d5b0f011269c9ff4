package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// agentModel is an OpenAI-compatible chat completions endpoint that plays
// the model of research_agent for one question: three calculator actions
// (1000+1, 1000+2, 1000+3), then a final answer, four calls in all. Which
// call a request is follows from the observations its prompt already
// holds, so a call made again after a crash is recognised as the same
// call. It counts the requests of each call, and can hold one call open
// (see holdCall), as a model still writing its answer does.
type agentModel struct {
	*httptest.Server
	t *testing.T

	mu   sync.Mutex
	seen [agentCalls]int
	// hold is the call whose first request is held open until its
	// client goes away; held is closed when it arrives.
	hold int
	held chan struct{}
}

// agentCalls is the number of model calls of one run of the agent.
const agentCalls = 4

func newAgentModel(t *testing.T) *agentModel {
	t.Helper()
	m := &agentModel{t: t, hold: -1}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

// holdCall makes the first request of call n wait, unanswered, until its
// client disconnects; the returned channel is closed when it arrives.
func (m *agentModel) holdCall(n int) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold, m.held = n, make(chan struct{})
	return m.held
}

func (m *agentModel) counts() [agentCalls]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen
}

// answer is the agent's text for call n.
func agentAnswer(n int) string {
	if n < agentCalls-1 {
		return fmt.Sprintf("Thought: I need the next sum.\nAction: calculator\nAction Input: 1000+%d", n+1)
	}
	return "Thought: I have all three.\nFinal Answer: 1001, 1002 and 1003"
}

func (m *agentModel) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := 0 // the observations the agent has made so far
	for n < agentCalls-1 && strings.Contains(string(body), fmt.Sprintf("Observation: %d", 1001+n)) {
		n++
	}
	m.mu.Lock()
	m.seen[n]++
	holding := n == m.hold && m.seen[n] == 1
	held := m.held
	m.mu.Unlock()
	if holding {
		close(held)
		select {
		case <-r.Context().Done(): // the worker died
		case <-time.After(time.Minute):
		}
		return
	}
	text := agentAnswer(n)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "c", "object": "chat.completion", "created": 1, "model": "agent",
			"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": text}, "finish_reason": "stop"}},
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(delta map[string]string, finish any) {
		b, _ := json.Marshal(map[string]any{
			"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "agent",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	for i, word := range strings.SplitAfter(text, " ") {
		delta := map[string]string{"content": word}
		if i == 0 {
			delta["role"] = "assistant"
		}
		chunk(delta, nil)
	}
	chunk(map[string]string{}, "stop")
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// TestKilledWorkerReplaysModelCalls kills a worker process with SIGKILL
// while research_agent waits for its third of four model calls (the
// model an OpenAI-compatible server of the test, given to the worker
// through OPENAI_BASE_URL), then starts another worker. The task must end
// SUCCESS, and the model must have seen each call once, but for the one
// in flight at the kill: the first two calls and the two calculator calls
// are replayed from their checkpoints, not made again.
func TestKilledWorkerReplaysModelCalls(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	model := newAgentModel(t)
	env := []string{openAIEnv + "=1", "OPENAI_API_KEY=sk-test", "OPENAI_BASE_URL=" + model.URL + "/v1", "OPENAI_MODEL=agent"}
	args := q.workerArgs("-lease", "2s", "-grace", "5s")

	held := model.holdCall(2)
	first := startWorkerEnv(t, srv.URL(), env, args...)
	id, err := q.broker.Enqueue(t.Context(), exampleflows.ResearchAgentName, json.RawMessage(`{"question": "What are 1000+1, 1000+2 and 1000+3?"}`), queue.EnqueueOptions{})
	require.NoError(t, err)

	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent never made its third model call; calls seen %v; task: %s", model.counts(), q.describe(t, []string{id}))
	}
	first.kill()
	second := startWorkerEnv(t, srv.URL(), env, args...)

	q.waitFinished(t, []string{id}, 60*time.Second, nil)
	assert.Equal(t, 0, second.terminate(30*time.Second))
	out := q.checkSucceededOnce(t, id)
	assert.Equal(t, 2, out.Attempt, "leased again once, after the kill")

	seen := model.counts()
	t.Logf("model requests per call: %v (call 3 was in flight at the kill)", seen)
	assert.Equal(t, [agentCalls]int{1, 1, 2, 1}, seen, "each call once, the one in flight at the kill twice")

	snap, _, err := q.b.Snapshot(t.Context(), id)
	require.NoError(t, err)
	assert.JSONEq(t, `"1001, 1002 and 1003"`, string(snap.Details.FinalResult))
	var lines []string
	tools := 0
	for _, s := range snap.Details.StepResults {
		if s.Type == progress.StepToolResult {
			tools++
			continue
		}
		lines = append(lines, s.Message)
	}
	assert.Equal(t, 3, tools, "one tool_result per calculator call: the replayed ones are not reported twice")
	assert.Equal(t, 2, countOf(lines, "Language model: answer replayed from attempt 1"), "log: %q", lines)
	assert.Equal(t, 2, countOf(lines, "Tool calculator: output replayed from attempt 1"), "log: %q", lines)
}

func countOf(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}
