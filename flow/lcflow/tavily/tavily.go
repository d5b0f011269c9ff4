// Package tavily is a web-search tool for langchaingo agents and chains,
// calling the search endpoint of Tavily's HTTP API (https://tavily.com).
//
// The tool returns the search results as JSON text, so that a flow run
// with lcflow shows them as a tool_result carrying data, not a string:
//
//	search := tavily.New(tavily.Config{}) // key from TAVILY_API_KEY
//	step := lcflow.Step("Searching the web", lcflow.ToolChain(search, "question", "search_results"))
//
// The base URL can be pointed elsewhere (TAVILY_API_URL, or Config.BaseURL)
// so that tests talk to a local httptest server. It uses only the standard
// library's HTTP client.
//
// A search that running the task again cannot fix (no key, a key
// refused, the plan's or the pay-as-you-go limit reached, a request the
// API rejects) fails with an error wrapping
// flow.ErrPermanent, so that a worker fails the task at once instead of
// retrying it; a timeout, a network error, a 429 or a 5xx stay retryable.
package tavily

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/refusal"
	"github.com/flowsrun/flows/internal/text"
)

// Defaults of Config.
const (
	DefaultBaseURL    = "https://api.tavily.com"
	DefaultTimeout    = 20 * time.Second
	DefaultMaxResults = 5
	// MaxMaxResults is the most results Tavily returns for one search.
	MaxMaxResults = 20
)

// The environment variables New reads for the fields left empty.
const (
	EnvAPIKey  = "TAVILY_API_KEY"
	EnvBaseURL = "TAVILY_API_URL"
)

// maxResponseBytes bounds the response body read from the API.
const maxResponseBytes = 4 << 20

// snippetLen bounds the part of an error response quoted in errors.
const snippetLen = 200

var (
	// ErrMissingAPIKey is returned by a search with no API key configured.
	// It wraps flow.ErrPermanent: a task whose flow fails with it is not
	// retried.
	ErrMissingAPIKey = flow.Permanent(errors.New("tavily: no API key: set " + EnvAPIKey + " or Config.APIKey"))
	// ErrKeyRefused is wrapped by the StatusError of a 401 or 403 answer:
	// the API key is wrong, revoked or out of credits. It wraps
	// flow.ErrPermanent: a task whose flow fails with it is not retried.
	ErrKeyRefused = flow.Permanent(errors.New("tavily: API key refused"))
	// ErrUsageLimit is wrapped by the StatusError of a 432 or 433 answer:
	// the search would exceed the plan's credits (432) or the
	// pay-as-you-go limit set on the Tavily dashboard (433). It wraps
	// flow.ErrPermanent: no retry brings credits, so a task whose flow
	// fails with it is not retried.
	ErrUsageLimit = flow.Permanent(errors.New("tavily: usage limit reached"))
	// ErrTimeout is wrapped by the error of a search that took longer than
	// Config.Timeout.
	ErrTimeout = errors.New("tavily: search timed out")
	// ErrBadResponse is wrapped by the error of a 200 answer whose body is
	// not the JSON the search API returns.
	ErrBadResponse = errors.New("tavily: malformed response")
	// ErrEmptyQuery is returned for a blank query.
	ErrEmptyQuery = errors.New("tavily: empty query")
)

// Tavily's own statuses for a search beyond the account's limits.
const (
	statusPlanLimit       = 432 // the plan's usage limit
	statusPayAsYouGoLimit = 433 // the pay-as-you-go limit
)

// StatusError is the error of an answer other than 200 OK.
type StatusError struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// Body is the start of the response body.
	Body string
}

// Error implements error.
func (e *StatusError) Error() string {
	status := strings.TrimSpace(fmt.Sprintf("HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode)))
	switch {
	case e.refused():
		return fmt.Sprintf("tavily: API key refused (%s): %s", status, e.Body)
	case e.StatusCode == statusPlanLimit:
		return fmt.Sprintf("tavily: the plan's usage limit is reached (%s): upgrade the plan on the Tavily dashboard or contact Tavily's support: %s", status, e.Body)
	case e.StatusCode == statusPayAsYouGoLimit:
		return fmt.Sprintf("tavily: the pay-as-you-go limit is reached (%s): raise the limit on the Tavily dashboard: %s", status, e.Body)
	}
	return fmt.Sprintf("tavily: search failed (%s): %s", status, e.Body)
}

// Unwrap returns ErrKeyRefused for a 401 or 403, ErrUsageLimit for
// Tavily's 432 (the plan's limit) and 433 (the pay-as-you-go limit),
// flow.ErrPermanent for the other answers that the same search would get
// again (400, 404, 422), and nil otherwise (429, 5xx...: worth another
// attempt).
func (e *StatusError) Unwrap() error {
	switch {
	case e.refused():
		return ErrKeyRefused
	case e.StatusCode == statusPlanLimit || e.StatusCode == statusPayAsYouGoLimit:
		return ErrUsageLimit
	case refusal.Status(e.StatusCode):
		return flow.ErrPermanent
	}
	return nil
}

func (e *StatusError) refused() bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

// Config configures a Tool. The zero value reads the key and base URL from
// the environment and uses the defaults above.
type Config struct {
	// APIKey is the Tavily API key. Empty means $TAVILY_API_KEY.
	APIKey string
	// BaseURL is the API's base URL, without /search. Empty means
	// $TAVILY_API_URL, or DefaultBaseURL when that is empty too.
	BaseURL string
	// HTTPClient sends the requests. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds each search. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxResults is the number of results asked for, 1 to MaxMaxResults.
	// Zero means DefaultMaxResults.
	MaxResults int
	// SearchDepth is "basic" or "advanced" (which costs more credits).
	// Empty leaves the API's default (basic).
	SearchDepth string
	// IncludeAnswer asks Tavily for a short generated answer besides the
	// results.
	IncludeAnswer bool
}

// Tool searches the web with Tavily. It implements langchaingo's
// tools.Tool and is safe for concurrent use.
type Tool struct {
	key         string
	endpoint    string
	client      *http.Client
	timeout     time.Duration
	maxResults  int
	searchDepth string
	answer      bool
}

// New returns a Tool configured by cfg, reading the environment for the
// key and base URL left empty. A missing key is reported by each search
// (ErrMissingAPIKey), so that a program can build its tools before it knows
// whether web search will be used.
func New(cfg Config) *Tool {
	if cfg.APIKey == "" {
		cfg.APIKey = os.Getenv(EnvAPIKey)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = os.Getenv(EnvBaseURL)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResults <= 0 {
		cfg.MaxResults = DefaultMaxResults
	}
	return &Tool{
		key:         strings.TrimSpace(cfg.APIKey),
		endpoint:    strings.TrimRight(cfg.BaseURL, "/") + "/search",
		client:      cfg.HTTPClient,
		timeout:     cfg.Timeout,
		maxResults:  min(cfg.MaxResults, MaxMaxResults),
		searchDepth: cfg.SearchDepth,
		answer:      cfg.IncludeAnswer,
	}
}

// Name returns "tavily_search".
func (t *Tool) Name() string { return "tavily_search" }

// Description tells an agent when to use the tool.
func (t *Tool) Description() string {
	return "A web search engine. Useful to answer questions about current events or facts " +
		"that need up-to-date information. Input should be a search query."
}

// Result is one search result.
type Result struct {
	Title   string  `json:"title"`
	URL     string  `json:"url"`
	Content string  `json:"content"`
	Score   float64 `json:"score"`
}

// Response is what a search returns: the query, Tavily's short answer when
// Config.IncludeAnswer asked for one, and the results.
type Response struct {
	Query   string   `json:"query"`
	Answer  string   `json:"answer,omitempty"`
	Results []Result `json:"results"`
}

// Call searches for input and returns the Response as JSON text.
func (t *Tool) Call(ctx context.Context, input string) (string, error) {
	resp, err := t.Search(ctx, input)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return "", fmt.Errorf("tavily: encoding results: %w", err)
	}
	return string(b), nil
}

type searchRequest struct {
	Query         string `json:"query"`
	MaxResults    int    `json:"max_results"`
	SearchDepth   string `json:"search_depth,omitempty"`
	IncludeAnswer bool   `json:"include_answer"`
}

// Search runs one search for query.
func (t *Tool) Search(ctx context.Context, query string) (*Response, error) {
	query = strings.TrimSpace(query)
	if query == "" {
		return nil, ErrEmptyQuery
	}
	if t.key == "" {
		return nil, ErrMissingAPIKey
	}
	body, err := json.Marshal(searchRequest{Query: query, MaxResults: t.maxResults, SearchDepth: t.searchDepth, IncludeAnswer: t.answer})
	if err != nil {
		return nil, fmt.Errorf("tavily: encoding request: %w", err)
	}

	callCtx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(callCtx, http.MethodPost, t.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("tavily: building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+t.key)

	res, err := t.client.Do(req)
	if err != nil {
		return nil, t.transportError(ctx, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, t.transportError(ctx, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, &StatusError{StatusCode: res.StatusCode, Body: snippet(data)}
	}

	var out Response
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%w: %w (body starts %q)", ErrBadResponse, err, snippet(data))
	}
	if out.Results == nil {
		var probe map[string]json.RawMessage
		_ = json.Unmarshal(data, &probe) // data was decoded above
		if _, ok := probe["results"]; !ok {
			return nil, fmt.Errorf("%w: no results field (body starts %q)", ErrBadResponse, snippet(data))
		}
		out.Results = []Result{}
	}
	if out.Query == "" {
		out.Query = query
	}
	return &out, nil
}

// transportError explains a failed request: the caller's cancellation, the
// tool's timeout, or a network error.
func (t *Tool) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("tavily: search cancelled: %w", ctxErr)
	}
	var ue *url.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ue) && ue.Timeout()) {
		return fmt.Errorf("%w after %s: %w", ErrTimeout, t.timeout, err)
	}
	return fmt.Errorf("tavily: search request failed: %w", err)
}

// snippet returns the start of b as text, for error messages.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) <= snippetLen {
		return s
	}
	return text.Clip(s, snippetLen) + "…"
}
