package flows

import (
	"context"
	"fmt"
	"strings"

	"github.com/flowsrun/flows/flow"
)

// SearchInput is the input of web_search_flow; the struct is the flow's
// input schema.
type SearchInput struct {
	Question string `json:"question" desc:"The question to search the web for and answer."`
}

// Validate refuses a blank question, so that it is answered with 422 at
// start-task rather than run.
func (in SearchInput) Validate() error {
	if strings.TrimSpace(in.Question) == "" {
		return &flow.InputError{Field: "question", Reason: "must not be blank"}
	}
	return nil
}

// SearchResult is one result of the offline web search, as the flow's
// tool_result step carries it.
type SearchResult struct {
	Title   string `json:"title"`
	URL     string `json:"url"`
	Content string `json:"content"`
}

// offlineNotice says, in every piece of output, that no search happened.
const offlineNotice = "offline sample data: no web request was made"

// WebSearch returns web_search_flow: a flow that takes a question, "searches
// the web" (it returns offline sample results, labelled as such, and makes
// no network request), reports the results as a tool_result of step
// "search" and tool "web_search", then composes and streams an answer.
func WebSearch(cfg Config) *flow.TypedFlow[SearchInput, string] {
	return flow.Typed(func(ctx context.Context, in SearchInput, t *flow.Task) (string, error) {
		rep := t.Progress
		q := strings.TrimSpace(in.Question)

		rep.Progress(10, "Searching the web")
		rep.Log("Searching the web")
		if err := pause(ctx, cfg.step()); err != nil {
			return "", err
		}
		results := sampleResults(q)
		rep.ToolResult("search", "web_search", results)
		rep.Log(fmt.Sprintf("Found %d results (%s)", len(results), offlineNotice))

		rep.Progress(50, "Composing the answer")
		rep.Log("Composing the answer")
		if err := pause(ctx, cfg.step()); err != nil {
			return "", err
		}
		answer := composeAnswer(q, results)
		if err := stream(ctx, rep, answer, cfg.token(), 50, 95); err != nil {
			return "", err
		}
		return answer, nil
	})
}

// sampleResults makes up the offline search results for q.
func sampleResults(q string) []SearchResult {
	return []SearchResult{
		{
			Title:   "Sample result 1 (" + offlineNotice + ")",
			URL:     "https://example.com/offline-sample/1",
			Content: fmt.Sprintf("A made-up overview page about %q, standing in for a real search hit.", q),
		},
		{
			Title:   "Sample result 2 (" + offlineNotice + ")",
			URL:     "https://example.com/offline-sample/2",
			Content: "A made-up article giving background and a few details on the question.",
		},
		{
			Title:   "Sample result 3 (" + offlineNotice + ")",
			URL:     "https://example.com/offline-sample/3",
			Content: "A made-up forum thread where people discuss the question and disagree.",
		},
	}
}

// composeAnswer writes the offline answer from the results.
func composeAnswer(q string, results []SearchResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Question: %s\n", q)
	fmt.Fprintf(&b, "This answer comes from an offline demo model that read %d sample results, not real web pages, so it cannot tell you anything true about the question.\n", len(results))
	b.WriteString("Sources consulted:")
	for _, r := range results {
		fmt.Fprintf(&b, "\n- %s", r.URL)
	}
	return b.String()
}
