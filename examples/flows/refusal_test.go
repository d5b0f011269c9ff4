package flows_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/flow/lcflow/tavily"
	"github.com/flowsrun/flows/progress"
)

// These tests run poem_flow with langchaingo's openai provider (as
// llm.FromEnv builds it from OPENAI_API_KEY and OPENAI_BASE_URL) against
// a stand-in for OpenAI's chat completions API, through the worker: an
// answer no retry can fix fails the task at its first attempt, an outage
// is retried.

// openAIAPI is a stand-in for OpenAI's chat completions API. It answers
// the statuses of fail, one a request, with OpenAI's error body, then
// "an answer" to every request (streamed when the request asks for it).
type openAIAPI struct {
	mu       sync.Mutex
	fail     []int
	requests int
}

func (a *openAIAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.requests++
	status := http.StatusOK
	if len(a.fail) > 0 {
		status, a.fail = a.fail[0], a.fail[1:]
	}
	a.mu.Unlock()

	var req struct {
		Stream bool `json:"stream"`
	}
	if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
		http.Error(w, "unexpected request", http.StatusTeapot)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if status != http.StatusOK {
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error": {"message": "status %d from the stand-in", "type": "test", "code": null}}`, status)
		return
	}
	if !req.Stream {
		_, _ = io.WriteString(w, `{"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
			"choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer"}, "finish_reason": "stop"}]}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, chunk := range []string{`"an "`, `"answer"`} {
		_, _ = fmt.Fprintf(w, "data: {\"id\": \"c1\", \"object\": \"chat.completion.chunk\", \"created\": 1, \"model\": \"m\", "+
			"\"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", \"content\": %s}, \"finish_reason\": null}]}\n\n", chunk)
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

func (a *openAIAPI) received() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

// openAIEnv is the environment that points the examples' model at url.
func openAIEnv(url string) func(string) string {
	return envOf(map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": url + "/v1", "OPENAI_MODEL": "m"})
}

func TestModelRefusalFailsAtTheFirstAttempt(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 422} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			api := &openAIAPI{fail: []int{status, status, status}}
			srv := httptest.NewServer(api)
			t.Cleanup(srv.Close)
			s := newRetryingStack(t, flows.Config{Getenv: openAIEnv(srv.URL)}, 3)

			last := s.follow(t, s.start(t, flows.PoemFlowName, `{}`)).last(t)
			require.Equal(t, progress.StateFailure, last.State)
			assert.Equal(t, fmt.Sprintf("Choosing a theme: API returned unexpected status code: %d: status %d from the stand-in", status, status),
				last.Details.Status, "the status names the refusal, with no attempt count")
			assert.Equal(t, 1, api.received(), "one attempt, one request")
			for _, line := range steps(last.Details.StepResults) {
				assert.NotContains(t, line, "retrying")
			}
		})
	}
}

func TestModelOutageIsRetried(t *testing.T) {
	for _, status := range []int{408, 409, 429, 500, 502, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			api := &openAIAPI{fail: []int{status}}
			srv := httptest.NewServer(api)
			t.Cleanup(srv.Close)
			s := newRetryingStack(t, flows.Config{Getenv: openAIEnv(srv.URL)}, 3)

			last := s.follow(t, s.start(t, flows.PoemFlowName, `{}`)).last(t)
			require.Equal(t, progress.StateSuccess, last.State, "status: %s", last.Details.Status)
			assert.Equal(t, "an answer", finalText(t, last))
			assert.Equal(t, 3, api.received(), "the failed call, then the theme and the poem")
			retry := fmt.Sprintf("log: attempt 1 failed: Choosing a theme: API returned unexpected status code: %d", status)
			assert.True(t, slices.ContainsFunc(steps(last.Details.StepResults), func(l string) bool {
				return strings.HasPrefix(l, retry)
			}), "a log step says why the task was retried: %q", steps(last.Details.StepResults))
		})
	}
}

func TestModelUnreachableIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there any more
	s := newRetryingStack(t, flows.Config{Getenv: openAIEnv("http://" + addr)}, 3)

	last := s.follow(t, s.start(t, flows.PoemFlowName, `{}`)).last(t)
	require.Equal(t, progress.StateFailure, last.State)
	assert.Equal(t, "failed after 3 attempts: Choosing a theme: network error: failed to reach API server", last.Details.Status)
}

func TestWebSearchWithoutTavilyKeyFailsAtTheFirstAttempt(t *testing.T) {
	api := &tavilyAPI{key: "never-sent"}
	tavilySrv := httptest.NewServer(api)
	t.Cleanup(tavilySrv.Close)
	t.Setenv(tavily.EnvAPIKey, "")
	s := newRetryingStack(t, flows.Config{Getenv: noEnv, StepDelay: -1, TokenDelay: -1,
		Search: tavily.New(tavily.Config{BaseURL: tavilySrv.URL})}, 3)

	last := s.follow(t, s.start(t, flows.WebSearchFlowName, `{"question": "Who designed Go?"}`)).last(t)
	require.Equal(t, progress.StateFailure, last.State)
	assert.Equal(t, "Searching the web: tool tavily_search: "+tavily.ErrMissingAPIKey.Error(), last.Details.Status)
	assert.Zero(t, api.received())
	n := 0
	for _, line := range steps(last.Details.StepResults) {
		if strings.Contains(line, "Searching the web: started") {
			n++
		}
	}
	assert.Equal(t, 1, n, "the search step ran once")
}
