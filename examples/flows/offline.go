package flows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/tools"
)

// OfflineNotice is in every result of OfflineSearch: no search happened.
const OfflineNotice = "offline sample data: no web request was made"

// ErrEmptyQuery is returned by OfflineSearch for a blank query.
var ErrEmptyQuery = errors.New("offline search: empty query")

// SearchResult is one result of a web search, in the shape of the results
// of the tavily tool.
type SearchResult struct {
	Title   string  `json:"title"`
	URL     string  `json:"url"`
	Content string  `json:"content"`
	Score   float64 `json:"score"`
}

// SearchResponse is what OfflineSearch returns, as JSON: the query, a
// notice saying that the results are made up, and the results.
type SearchResponse struct {
	Query   string         `json:"query"`
	Notice  string         `json:"notice"`
	Results []SearchResult `json:"results"`
}

// OfflineSearch is the web-search tool of the examples when no Tavily key
// is set: it makes no request and returns three made-up results about the
// query, each labelled as offline sample data and pointing to
// example.com, in the JSON shape the tavily tool returns. It is a
// langchaingo tools.Tool, safe for concurrent use.
type OfflineSearch struct {
	// Delay is the pause before the results, standing for a real search's
	// latency; zero answers at once.
	Delay time.Duration
}

var _ tools.Tool = (*OfflineSearch)(nil)

// Name returns "web_search".
func (*OfflineSearch) Name() string { return "web_search" }

// Description tells an agent when to use the tool.
func (*OfflineSearch) Description() string {
	return "A web search engine (offline sample data in this demo). Useful to answer questions " +
		"about facts or current events. Input should be a search query."
}

// Call returns the SearchResponse for input as JSON, after Delay, or the
// context's error if it ends first.
func (s *OfflineSearch) Call(ctx context.Context, input string) (string, error) {
	q := strings.TrimSpace(input)
	if q == "" {
		return "", ErrEmptyQuery
	}
	if err := wait(ctx, s.Delay); err != nil {
		return "", fmt.Errorf("offline search: %w", err)
	}
	b, err := json.Marshal(SearchResponse{Query: q, Notice: OfflineNotice, Results: sampleResults(q)})
	if err != nil {
		return "", fmt.Errorf("offline search: encoding results: %w", err)
	}
	return string(b), nil
}

// sampleResults makes up the offline results for q.
func sampleResults(q string) []SearchResult {
	return []SearchResult{
		{
			Title:   "Sample result 1 (" + OfflineNotice + ")",
			URL:     "https://example.com/offline-sample/1",
			Content: fmt.Sprintf("A made-up overview page about %q, standing in for a real search hit.", q),
			Score:   0.9,
		},
		{
			Title:   "Sample result 2 (" + OfflineNotice + ")",
			URL:     "https://example.com/offline-sample/2",
			Content: "A made-up article giving background and a few details on the question.",
			Score:   0.7,
		},
		{
			Title:   "Sample result 3 (" + OfflineNotice + ")",
			URL:     "https://example.com/offline-sample/3",
			Content: "A made-up forum thread where people discuss the question and disagree.",
			Score:   0.5,
		},
	}
}

// paced returns m slowed down by delay before each call, or m itself for
// no delay.
func paced(m llms.Model, delay time.Duration) llms.Model {
	if delay <= 0 {
		return m
	}
	return pacedModel{m: m, delay: delay}
}

// pacedModel pauses before each call of its model, so that the offline
// model takes a moment to "think" as a real one does.
type pacedModel struct {
	m     llms.Model
	delay time.Duration
}

func (p pacedModel) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	if err := wait(ctx, p.delay); err != nil {
		return nil, err
	}
	return p.m.GenerateContent(ctx, messages, options...)
}

func (p pacedModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, p, prompt, options...)
}

// wait waits for d or until ctx ends, and returns ctx's error in the
// second case.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
