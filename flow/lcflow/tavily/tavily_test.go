package tavily_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow/tavily"
)

var _ tools.Tool = (*tavily.Tool)(nil)

const searchResponse = `{
  "query": "who wrote Go?",
  "answer": "Robert Griesemer, Rob Pike and Ken Thompson.",
  "images": [],
  "results": [
    {"title": "Go (programming language)", "url": "https://en.wikipedia.org/wiki/Go_(programming_language)",
     "content": "Go was designed at Google in 2007 by Robert Griesemer, Rob Pike, and Ken Thompson.", "score": 0.93, "raw_content": null},
    {"title": "The Go Programming Language", "url": "https://go.dev", "content": "Build simple, secure, scalable systems with Go.", "score": 0.71}
  ],
  "response_time": "1.02"
}`

// server starts an httptest server answering /search with handler and
// counting the requests it gets.
func server(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// hang keeps a handler from answering until the client goes away or the
// test ends. It reads the body first: the server notices a client that
// closed its connection only once the request body is consumed.
func hang(t *testing.T, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-t.Context().Done():
	}
}

func TestSearchSuccess(t *testing.T) {
	var got struct {
		method, path, auth, contentType string
		body                            map[string]any
	}
	srv, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path = r.Method, r.URL.Path
		got.auth, got.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got.body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, searchResponse)
	})

	tool := tavily.New(tavily.Config{APIKey: "tvly-test", BaseURL: srv.URL + "/", MaxResults: 2, SearchDepth: "advanced", IncludeAnswer: true})
	out, err := tool.Call(t.Context(), "  who wrote Go?  ")
	require.NoError(t, err)

	require.Equal(t, int32(1), hits.Load())
	assert.Equal(t, http.MethodPost, got.method)
	assert.Equal(t, "/search", got.path, "a trailing slash on the base URL is not doubled")
	assert.Equal(t, "Bearer tvly-test", got.auth)
	assert.Equal(t, "application/json", got.contentType)
	assert.Equal(t, map[string]any{
		"query": "who wrote Go?", "max_results": float64(2), "search_depth": "advanced", "include_answer": true,
	}, got.body)

	assert.JSONEq(t, `{
	  "query": "who wrote Go?",
	  "answer": "Robert Griesemer, Rob Pike and Ken Thompson.",
	  "results": [
	    {"title": "Go (programming language)", "url": "https://en.wikipedia.org/wiki/Go_(programming_language)",
	     "content": "Go was designed at Google in 2007 by Robert Griesemer, Rob Pike, and Ken Thompson.", "score": 0.93},
	    {"title": "The Go Programming Language", "url": "https://go.dev", "content": "Build simple, secure, scalable systems with Go.", "score": 0.71}
	  ]}`, out)
	assert.Equal(t, "tavily_search", tool.Name())
	assert.NotEmpty(t, tool.Description())
}

func TestSearchDefaultsFromEnvironment(t *testing.T) {
	var auth string
	var body map[string]any
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		_, _ = io.WriteString(w, `{"results": []}`)
	})
	t.Setenv(tavily.EnvAPIKey, "tvly-env")
	t.Setenv(tavily.EnvBaseURL, srv.URL)

	res, err := tavily.New(tavily.Config{}).Search(t.Context(), "q")
	require.NoError(t, err)
	assert.Equal(t, "Bearer tvly-env", auth)
	assert.Equal(t, float64(tavily.DefaultMaxResults), body["max_results"])
	assert.NotContains(t, body, "search_depth", "the API's default depth is left alone")
	assert.Equal(t, &tavily.Response{Query: "q", Results: []tavily.Result{}}, res, "an empty result list is a list, and the query is filled in")
}

func TestSearchErrors(t *testing.T) {
	longBody := strings.Repeat("x", 5000)
	tests := []struct {
		name       string
		handler    func(t *testing.T, w http.ResponseWriter, r *http.Request)
		cfg        tavily.Config
		wantIs     []error
		wantStatus int
		wantText   []string
		// permanent: a retry would get the same answer, so the error
		// wraps flow.ErrPermanent.
		permanent bool
	}{
		{
			name: "401 says the key was refused",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": {"error": "Unauthorized: missing or invalid API key."}}`, http.StatusUnauthorized)
			},
			wantIs:     []error{tavily.ErrKeyRefused},
			wantStatus: http.StatusUnauthorized,
			wantText:   []string{"API key refused", "401", "invalid API key"},
			permanent:  true,
		},
		{
			name: "403 says the key was refused",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": {"error": "Forbidden"}}`, http.StatusForbidden)
			},
			wantIs:     []error{tavily.ErrKeyRefused},
			wantStatus: http.StatusForbidden,
			wantText:   []string{"API key refused", "403"},
			permanent:  true,
		},
		{
			name: "400 is not worth another try",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": {"error": "Query is too long."}}`, http.StatusBadRequest)
			},
			wantStatus: http.StatusBadRequest,
			wantText:   []string{"search failed", "400 Bad Request", "too long"},
			permanent:  true,
		},
		{
			name: "404 is not worth another try",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "not found", http.StatusNotFound)
			},
			wantStatus: http.StatusNotFound,
			wantText:   []string{"404 Not Found"},
			permanent:  true,
		},
		{
			name: "422 is not worth another try",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": "max_results"}`, http.StatusUnprocessableEntity)
			},
			wantStatus: http.StatusUnprocessableEntity,
			wantText:   []string{"422"},
			permanent:  true,
		},
		{
			// Tavily's answer when the plan's credits are spent: no
			// retry brings credits, the plan must change.
			name: "432 says the plan's limit was reached",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": {"error": "This request exceeds your plan's set usage limit. Please upgrade your plan or contact support@tavily.com"}}`, 432)
			},
			wantIs:     []error{tavily.ErrUsageLimit},
			wantStatus: 432,
			wantText:   []string{"usage limit", "HTTP 432", "upgrade the plan", "exceeds your plan"},
			permanent:  true,
		},
		{
			// Tavily's answer when the pay-as-you-go limit set on the
			// dashboard is reached.
			name: "433 says the pay-as-you-go limit was reached",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, `{"detail": {"error": "This request exceeds the pay-as-you-go limit. You can increase your limit on the Tavily dashboard."}}`, 433)
			},
			wantIs:     []error{tavily.ErrUsageLimit},
			wantStatus: 433,
			wantText:   []string{"pay-as-you-go limit", "HTTP 433", "raise the limit", "dashboard"},
			permanent:  true,
		},
		{
			name: "429 is worth another try",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "slow down", http.StatusTooManyRequests)
			},
			wantStatus: http.StatusTooManyRequests,
			wantText:   []string{"429 Too Many Requests"},
		},
		{
			name: "503 is worth another try",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "maintenance", http.StatusServiceUnavailable)
			},
			wantStatus: http.StatusServiceUnavailable,
			wantText:   []string{"503"},
		},
		{
			name: "500 gives the status and the body",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "upstream exploded", http.StatusInternalServerError)
			},
			wantStatus: http.StatusInternalServerError,
			wantText:   []string{"search failed", "500 Internal Server Error", "upstream exploded"},
		},
		{
			name: "a long error body is cut",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				http.Error(w, longBody, http.StatusBadGateway)
			},
			wantStatus: http.StatusBadGateway,
			wantText:   []string{"502", "xxx…"},
		},
		{
			name: "malformed JSON",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, `{"results": [ {"title": `)
			},
			wantIs:   []error{tavily.ErrBadResponse},
			wantText: []string{"malformed response", `{\"results\"`},
		},
		{
			name: "JSON without results",
			handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, `{"error": "nope"}`)
			},
			wantIs:   []error{tavily.ErrBadResponse},
			wantText: []string{"no results field"},
		},
		{
			name: "timeout",
			handler: func(t *testing.T, _ http.ResponseWriter, r *http.Request) {
				hang(t, r) // answers only once the client gave up
			},
			cfg:      tavily.Config{Timeout: 50 * time.Millisecond},
			wantIs:   []error{tavily.ErrTimeout, context.DeadlineExceeded},
			wantText: []string{"timed out after 50ms"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, hits := server(t, func(w http.ResponseWriter, r *http.Request) { tt.handler(t, w, r) })
			cfg := tt.cfg
			cfg.APIKey, cfg.BaseURL = "tvly-test", srv.URL
			out, err := tavily.New(cfg).Call(t.Context(), "query")
			require.Error(t, err)
			assert.Empty(t, out)
			assert.Equal(t, int32(1), hits.Load())
			for _, target := range tt.wantIs {
				assert.ErrorIs(t, err, target)
			}
			if tt.wantStatus != 0 {
				var se *tavily.StatusError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tt.wantStatus, se.StatusCode)
				assert.LessOrEqual(t, len(se.Body), 210, "the body is quoted as a snippet")
			}
			if tt.wantStatus != http.StatusUnauthorized && tt.wantStatus != http.StatusForbidden {
				assert.NotErrorIs(t, err, tavily.ErrKeyRefused)
			}
			if tt.wantStatus != 432 && tt.wantStatus != 433 {
				assert.NotErrorIs(t, err, tavily.ErrUsageLimit)
			}
			assert.Equal(t, tt.permanent, errors.Is(err, flow.ErrPermanent), "permanent: %v", err)
			for _, s := range tt.wantText {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

func TestSearchRefusedBeforeTheNetwork(t *testing.T) {
	srv, hits := server(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"results": []}`)
	})
	t.Setenv(tavily.EnvAPIKey, "")

	_, err := tavily.New(tavily.Config{BaseURL: srv.URL}).Call(t.Context(), "query")
	require.ErrorIs(t, err, tavily.ErrMissingAPIKey)
	assert.Contains(t, err.Error(), "TAVILY_API_KEY")
	assert.ErrorIs(t, err, flow.ErrPermanent, "no retry brings a key")

	_, err = tavily.New(tavily.Config{APIKey: "k", BaseURL: srv.URL}).Call(t.Context(), "   ")
	require.ErrorIs(t, err, tavily.ErrEmptyQuery)
	assert.Zero(t, hits.Load(), "no request is sent")
}

func TestSearchCancelledByCaller(t *testing.T) {
	started := make(chan struct{})
	srv, _ := server(t, func(_ http.ResponseWriter, r *http.Request) {
		close(started)
		hang(t, r)
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	_, err := tavily.New(tavily.Config{APIKey: "k", BaseURL: srv.URL}).Call(ctx, "query")
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, tavily.ErrTimeout, "the caller's cancellation is not a timeout")
}

func TestSearchNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens there any more

	_, err := tavily.New(tavily.Config{APIKey: "k", BaseURL: base}).Call(t.Context(), "query")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "search request failed")
	assert.NotErrorIs(t, err, tavily.ErrTimeout)
	assert.NotErrorIs(t, err, flow.ErrPermanent, "the network may come back")
}

func TestMaxResultsIsCapped(t *testing.T) {
	var body map[string]any
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		_, _ = io.WriteString(w, `{"results": []}`)
	})
	_, err := tavily.New(tavily.Config{APIKey: "k", BaseURL: srv.URL, MaxResults: 100}).Call(t.Context(), "q")
	require.NoError(t, err)
	assert.Equal(t, float64(tavily.MaxMaxResults), body["max_results"])
}
