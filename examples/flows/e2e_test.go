package flows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// These tests run the example flows as a deployment does: started over
// HTTP, queued in the in-memory backend, run by a queue.Worker and
// followed over the SSE endpoint of ssehttp.

// stack is the example flows served by the real queue and HTTP API.
type stack struct {
	url    string
	client *http.Client
}

// newStack registers the example flows configured by cfg and serves them
// with a running worker, until the test ends. Each task has one attempt.
func newStack(t *testing.T, cfg flows.Config) *stack {
	t.Helper()
	return newRetryingStack(t, cfg, 1)
}

// newRetryingStack is newStack giving each task maxAttempts attempts,
// retried without waiting.
func newRetryingStack(t *testing.T, cfg flows.Config, maxAttempts int) *stack {
	t.Helper()
	reg := registry.New()
	require.NoError(t, flows.RegisterWith(reg, cfg))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	backend := queue.NewMemory(queue.MemoryConfig{})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry: reg, Concurrency: 8, Logger: quiet,
		Backoff: func(int) time.Duration { return 0 },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	api := ssehttp.New(ssehttp.Config{
		Queue:    queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg, MaxAttempts: maxAttempts}),
		Progress: store,
		Registry: reg,
		Logger:   quiet,
	})
	srv := httptest.NewServer(api)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		assert.NoError(t, <-done)
	})
	return &stack{url: srv.URL, client: srv.Client()}
}

// start starts flow with inputs (a JSON object) and returns the task id.
func (s *stack) start(t *testing.T, flow, inputs string) string {
	t.Helper()
	body := fmt.Sprintf(`{"flow": %q, "inputs": %s}`, flow, inputs)
	resp, err := s.client.Post(s.url+"/start-task/", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "start-task: %s", b)
	var out struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal(b, &out))
	require.NotEmpty(t, out.TaskID)
	return out.TaskID
}

// followed is what a client saw of a task's event stream.
type followed struct {
	// snaps are the snapshots of the default messages, in order.
	snaps []progress.Snapshot
	// tokens are the texts of the token messages, in order.
	tokens []string
	// ids are the ids of every message, in order.
	ids []string
}

// last returns the last snapshot.
func (f followed) last(t *testing.T) progress.Snapshot {
	t.Helper()
	require.NotEmpty(t, f.snaps, "the stream ended without a snapshot")
	return f.snaps[len(f.snaps)-1]
}

// follow reads the event stream of task id until the server ends it.
func (s *stack) follow(t *testing.T, id string) followed {
	t.Helper()
	resp, err := s.client.Get(s.url + "/task-status/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/event-stream")

	var out followed
	stream := sse.NewReader(resp.Body)
	for {
		m, err := stream.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if !m.HasData {
			continue
		}
		out.ids = append(out.ids, m.ID)
		payload := []byte(m.Data)
		switch m.Event {
		case "":
			var snap progress.Snapshot
			require.NoError(t, json.Unmarshal(payload, &snap), "%s", payload)
			out.snaps = append(out.snaps, snap)
		case "token":
			var tok struct {
				Token string `json:"token"`
			}
			require.NoError(t, json.Unmarshal(payload, &tok), "%s", payload)
			out.tokens = append(out.tokens, tok.Token)
		}
	}
}

// assertOrderedStream checks what every stream of a task must show: ids
// rising without repeats, step results that only grow (each snapshot's a
// prefix of the next's), progress that never goes back, and a SUCCESS at
// 100 at the end.
func assertOrderedStream(t *testing.T, f followed) progress.Snapshot {
	t.Helper()
	prev := 0
	for _, id := range f.ids {
		if id == "" { // the PENDING snapshot of a task with no event yet
			continue
		}
		n, err := strconv.Atoi(id)
		require.NoError(t, err, "event id %q", id)
		assert.Greater(t, n, prev, "event ids must rise: %q", f.ids)
		prev = n
	}
	last := f.last(t)
	for i := 1; i < len(f.snaps); i++ {
		before, after := f.snaps[i-1].Details, f.snaps[i].Details
		require.GreaterOrEqual(t, len(after.StepResults), len(before.StepResults), "step_results shrank")
		assert.Equal(t, before.StepResults, after.StepResults[:len(before.StepResults)], "step_results were rewritten")
		assert.GreaterOrEqual(t, after.Progress, before.Progress, "progress went back")
	}
	require.Equal(t, progress.StateSuccess, last.State, "status: %s", last.Details.Status)
	assert.Equal(t, 100, last.Details.Progress)
	return last
}

// finalText decodes a snapshot's final_result as a string.
func finalText(t *testing.T, snap progress.Snapshot) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(snap.Details.FinalResult, &s), "final_result %s", snap.Details.FinalResult)
	return s
}

func TestPoemFlowOverQueueAndSSE(t *testing.T) {
	const theme = "the last train home"
	const poem = "The carriage hums, the windows black,\nthe city folds behind the track;\na sleeper smiles at someone's name,\nand every station looks the same."
	model := llm.NewScripted(theme, poem)
	s := newStack(t, flows.Config{Getenv: noEnv, Model: model, ModelLabel: "scripted"})

	got := s.follow(t, s.start(t, flows.PoemFlowName, `{}`))
	last := assertOrderedStream(t, got)

	assert.Equal(t, []string{
		"log: Choosing a theme: started",
		"log: Calling the language model",
		"log: Choosing a theme: done",
		"log: Writing the poem: started",
		"log: Calling the language model",
		"log: Writing the poem: done",
	}, steps(last.Details.StepResults))
	assert.Equal(t, poem, finalText(t, last))
	assert.Equal(t, llm.Chunks(poem), got.tokens, "the poem's chunks arrive as token events, in order, and the theme's do not")
	assert.Equal(t, poem, strings.Join(got.tokens, ""))
	require.Len(t, model.Prompts(), 2)
	assert.Contains(t, model.Prompts()[1], theme)
}

// tavilyAPI is a stand-in for Tavily's search API: it checks each request
// as the real one would and answers two results about the query.
type tavilyAPI struct {
	key string

	mu       sync.Mutex
	requests int
	queries  []string
}

func (a *tavilyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.requests++
	a.mu.Unlock()
	var req struct {
		Query      string `json:"query"`
		MaxResults int    `json:"max_results"`
	}
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/search":
		http.Error(w, `{"detail": "not found"}`, http.StatusNotFound)
		return
	case r.Header.Get("Authorization") != "Bearer "+a.key:
		http.Error(w, `{"detail": {"error": "Unauthorized: missing or invalid API key."}}`, http.StatusUnauthorized)
		return
	case json.NewDecoder(r.Body).Decode(&req) != nil || req.Query == "" || req.MaxResults < 1:
		http.Error(w, `{"detail": "bad request"}`, http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.queries = append(a.queries, req.Query)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"query":         req.Query,
		"follow_up":     nil,
		"answer":        nil,
		"images":        []any{},
		"response_time": 0.42,
		"results": []map[string]any{
			{"title": "Go (programming language)", "url": "https://en.wikipedia.org/wiki/Go_(programming_language)",
				"content": "Go was designed at Google in 2007 by Robert Griesemer, Rob Pike, and Ken Thompson.", "score": 0.93, "raw_content": nil},
			{"title": "The Go Programming Language", "url": "https://go.dev",
				"content": "Build simple, secure, scalable systems with Go.", "score": 0.71, "raw_content": nil},
		},
	})
}

// received returns how many requests the API got, answered or refused.
func (a *tavilyAPI) received() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

func (a *tavilyAPI) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.queries...)
}

func TestWebSearchFlowWithTavilyOverQueueAndSSE(t *testing.T) {
	api := &tavilyAPI{key: "tvly-test-key"}
	tavilySrv := httptest.NewServer(api)
	t.Cleanup(tavilySrv.Close)

	const answer = "Go was designed at Google by Robert Griesemer, Rob Pike and Ken Thompson (https://go.dev)."
	model := llm.NewScripted(answer)
	// The search tool is chosen from the environment, as in a deployment:
	// TAVILY_API_KEY selects Tavily, TAVILY_API_URL points it at the
	// stand-in.
	env := map[string]string{"TAVILY_API_KEY": "tvly-test-key", "TAVILY_API_URL": tavilySrv.URL}
	s := newStack(t, flows.Config{Getenv: envOf(env), Model: model, ModelLabel: "scripted"})

	got := s.follow(t, s.start(t, flows.WebSearchFlowName, `{"question": "Who designed Go?"}`))
	last := assertOrderedStream(t, got)

	assert.Equal(t, []string{
		"log: Searching the web: started",
		`log: Using tool tavily_search with input "Who designed Go?"`,
		"tool_result: Searching the web / tavily_search",
		"log: Searching the web: done",
		"log: Answering the question: started",
		"log: Calling the language model",
		"log: Answering the question: done",
	}, steps(last.Details.StepResults))
	assert.Equal(t, []string{"Who designed Go?"}, api.seen(), "one search, for the question")

	tr := toolResults(last.Details.StepResults)
	require.Len(t, tr, 1)
	assert.JSONEq(t, `{"query": "Who designed Go?", "results": [
		{"title": "Go (programming language)", "url": "https://en.wikipedia.org/wiki/Go_(programming_language)",
		 "content": "Go was designed at Google in 2007 by Robert Griesemer, Rob Pike, and Ken Thompson.", "score": 0.93},
		{"title": "The Go Programming Language", "url": "https://go.dev",
		 "content": "Build simple, secure, scalable systems with Go.", "score": 0.71}]}`,
		string(tr[0].Data), "the search results are parsed JSON in the tool result")

	assert.Equal(t, answer, finalText(t, last))
	assert.Equal(t, llm.Chunks(answer), got.tokens)
	prompts := model.Prompts()
	require.Len(t, prompts, 1)
	assert.Contains(t, prompts[0], "https://go.dev", "the model answers from the search results")
}

func TestWebSearchFlowFailsOnTavilyError(t *testing.T) {
	api := &tavilyAPI{key: "the-right-key"}
	tavilySrv := httptest.NewServer(api)
	t.Cleanup(tavilySrv.Close)
	env := map[string]string{"TAVILY_API_KEY": "a-wrong-key", "TAVILY_API_URL": tavilySrv.URL}
	model := llm.NewScripted("never asked")
	s := newRetryingStack(t, flows.Config{Getenv: envOf(env), Model: model}, 3)

	got := s.follow(t, s.start(t, flows.WebSearchFlowName, `{"question": "Who designed Go?"}`))
	last := got.last(t)
	require.Equal(t, progress.StateFailure, last.State)
	assert.Contains(t, last.Details.Status, "API key refused", "the failure says why")
	assert.NotContains(t, last.Details.Status, "attempts")
	assert.Equal(t, 1, api.received(), "a refused key is not tried again")
	assert.Contains(t, steps(last.Details.StepResults), "log: Tool tavily_search failed: "+
		`tavily: API key refused (HTTP 401 Unauthorized): {"detail": {"error": "Unauthorized: missing or invalid API key."}}`)
	assert.Empty(t, toolResults(last.Details.StepResults))
	assert.Equal(t, 1, model.Remaining(), "no answer is written without results")
}

func TestResearchAgentOverQueueAndSSE(t *testing.T) {
	model := llm.NewScripted(
		"Thought: I should look this up.\nAction: web_search\nAction Input: who designed Go",
		"Thought: Now the year they started, minus nothing.\nAction: calculator\nAction Input: 2000 + 7",
		"Thought: I now know the final answer.\nFinal Answer: Go was designed at Google, starting in 2007.",
	)
	s := newStack(t, flows.Config{Getenv: noEnv, Model: model, StepDelay: -1})

	got := s.follow(t, s.start(t, flows.ResearchAgentName, `{"question": "Who designed Go, and when?"}`))
	last := assertOrderedStream(t, got)

	assert.Equal(t, []string{
		"log: Researching: started",
		"log: Calling the language model",
		`log: Using tool web_search with input "who designed Go"`,
		"tool_result: Researching / web_search",
		"log: Calling the language model",
		`log: Using tool calculator with input "2000 + 7"`,
		"tool_result: Researching / calculator",
		"log: Calling the language model",
		"log: Agent finished",
		"log: Researching: done",
	}, steps(last.Details.StepResults))
	tr := toolResults(last.Details.StepResults)
	require.Len(t, tr, 2)
	var res flows.SearchResponse
	require.NoError(t, json.Unmarshal(tr[0].Data, &res))
	assert.Equal(t, "who designed Go", res.Query)
	assert.JSONEq(t, `2007`, string(tr[1].Data))
	assert.Equal(t, "Go was designed at Google, starting in 2007.", finalText(t, last))

	// The agent's steps streamed: some snapshot showed the first tool
	// result before the agent had finished.
	var sawPartial bool
	for _, snap := range got.snaps {
		if snap.State == progress.StateProgress && len(toolResults(snap.Details.StepResults)) == 1 {
			sawPartial = true
		}
	}
	assert.True(t, sawPartial, "no snapshot between the first tool result and the end")
}

func TestFlowsEndpointShowsModelAndSearch(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		model  string
		search string
	}{
		{name: "no key: offline", model: llm.OfflineLabel, search: flows.OfflineSearchLabel},
		// No request reaches Google: the provider is built on its first
		// call, and no task runs here.
		{name: "Gemini key", env: map[string]string{"GEMINI_API_KEY": "test-key"},
			model: "Gemini " + llm.DefaultGeminiModel + " (Google AI)", search: flows.OfflineSearchLabel},
		{name: "Gemini and Tavily keys", env: map[string]string{"GEMINI_API_KEY": "test-key", "TAVILY_API_KEY": "tvly-test"},
			model: "Gemini " + llm.DefaultGeminiModel + " (Google AI)", search: flows.TavilySearchLabel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, flows.Config{Getenv: envOf(tt.env)})
			resp, err := s.client.Get(s.url + "/flows/")
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var list []struct {
				Name   string            `json:"name"`
				Labels map[string]string `json:"labels"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
			require.Len(t, list, 3)
			for _, f := range list {
				assert.Equal(t, tt.model, f.Labels[flows.LabelModel], f.Name)
				if f.Name != flows.PoemFlowName {
					assert.Equal(t, tt.search, f.Labels[flows.LabelSearch], f.Name)
				}
			}
		})
	}
}

func TestConcurrentFlowsOverQueueAndSSE(t *testing.T) {
	s := newStack(t, fastOffline)
	type job struct {
		flow, question string
		id             string
	}
	var jobs []*job
	for i := range 4 {
		jobs = append(jobs,
			&job{flow: flows.PoemFlowName},
			&job{flow: flows.WebSearchFlowName, question: fmt.Sprintf("question number %d?", i)},
			&job{flow: flows.ResearchAgentName, question: fmt.Sprintf("What is %d * 7?", i+10)},
		)
	}
	for _, j := range jobs {
		inputs := `{}`
		if j.question != "" {
			inputs = fmt.Sprintf(`{"question": %q}`, j.question)
		}
		j.id = s.start(t, j.flow, inputs)
	}

	var wg sync.WaitGroup
	results := make([]followed, len(jobs))
	for i, j := range jobs {
		wg.Go(func() { results[i] = s.follow(t, j.id) })
	}
	wg.Wait()

	for i, j := range jobs {
		t.Run(fmt.Sprintf("%s %d", j.flow, i), func(t *testing.T) {
			last := assertOrderedStream(t, results[i])
			text := finalText(t, last)
			tr := toolResults(last.Details.StepResults)
			switch j.flow {
			case flows.PoemFlowName:
				assert.Equal(t, text, strings.Join(results[i].tokens, ""), "each stream carries its own task's tokens")
				assert.Empty(t, tr)
			case flows.WebSearchFlowName:
				assert.Equal(t, text, strings.Join(results[i].tokens, ""))
				require.Len(t, tr, 1)
				var res flows.SearchResponse
				require.NoError(t, json.Unmarshal(tr[0].Data, &res))
				assert.Equal(t, j.question, res.Query, "each task searched for its own question")
				assert.Contains(t, text, j.question)
			case flows.ResearchAgentName:
				require.Len(t, tr, 1)
				assert.Equal(t, "calculator", tr[0].Tool)
				var n int
				_, err := fmt.Sscanf(j.question, "What is %d * 7?", &n)
				require.NoError(t, err)
				assert.JSONEq(t, strconv.Itoa(n*7), string(tr[0].Data), "each agent computed its own product")
				assert.Contains(t, text, strconv.Itoa(n*7))
			}
		})
	}
}
