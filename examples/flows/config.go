package flows

import (
	"os"
	"strings"
	"time"

	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/flow/lcflow/tavily"
)

// Default pace of the offline stand-ins: slow enough for a person watching
// the demo page to see each step arrive and the text being written.
const (
	DefaultStepDelay  = 700 * time.Millisecond
	DefaultTokenDelay = 40 * time.Millisecond
)

// Labels of the search tools, as the "search" label of the flows shows
// them.
const (
	// OfflineSearchLabel labels OfflineSearch, used when TAVILY_API_KEY is
	// not set.
	OfflineSearchLabel = "offline sample data"
	// TavilySearchLabel labels Tavily's web search at its default URL;
	// with TAVILY_API_URL set, the label is "tavily at <url>".
	TavilySearchLabel = "tavily"
)

// CustomModelLabel is the model label of flows given a Config.Model
// without a Config.ModelLabel.
const CustomModelLabel = "custom model"

// Config chooses the model and the search tool of the example flows and
// the pace of the offline stand-ins. The zero value reads the process
// environment:
//
//   - the model is llm.FromEnv's choice: Gemini with GEMINI_API_KEY, an
//     OpenAI(-compatible) endpoint with OPENAI_API_KEY (and
//     OPENAI_BASE_URL), Ollama with OLLAMA_HOST or OLLAMA_MODEL, else the
//     offline scripted model;
//   - the search tool is Tavily with TAVILY_API_KEY (at TAVILY_API_URL
//     when set), else OfflineSearch.
type Config struct {
	// Getenv reads the environment. Nil means os.Getenv.
	Getenv func(string) string
	// Model, when set, is the language model of every flow, in place of
	// the one the environment chooses (tests give an llm.Scripted).
	Model llms.Model
	// ModelLabel is the "model" label of the flows when Model is set.
	// Empty means CustomModelLabel.
	ModelLabel string
	// Search, when set, is the web-search tool of web_search_flow and
	// research_agent, in place of the one the environment chooses.
	Search tools.Tool
	// SearchLabel is the "search" label of those flows when Search is
	// set. Empty means the tool's name.
	SearchLabel string
	// StepDelay is the pause the offline stand-ins take before they
	// answer, standing for the latency of a real service: the offline
	// model before each reply, OfflineSearch before its results. Zero
	// means DefaultStepDelay; a negative value means no pause. Real
	// providers and tools are not slowed down.
	StepDelay time.Duration
	// TokenDelay is the pause between two chunks the offline model
	// streams. Zero means DefaultTokenDelay; a negative value means no
	// pause.
	TokenDelay time.Duration
}

func (c Config) step() time.Duration  { return orDefault(c.StepDelay, DefaultStepDelay) }
func (c Config) token() time.Duration { return orDefault(c.TokenDelay, DefaultTokenDelay) }

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (c Config) getenv(key string) string {
	if c.Getenv == nil {
		return strings.TrimSpace(os.Getenv(key))
	}
	return strings.TrimSpace(c.Getenv(key))
}

// model returns the flows' model and its label.
func (c Config) model() (llms.Model, string, error) {
	if c.Model != nil {
		if c.ModelLabel == "" {
			return c.Model, CustomModelLabel, nil
		}
		return c.Model, c.ModelLabel, nil
	}
	m, info, err := llm.FromEnv(c.getenv)
	if err != nil {
		return nil, "", err
	}
	if off, ok := m.(*llm.Offline); ok {
		off.Delay = c.token()
		m = paced(off, c.step())
	}
	return lcflow.DescribedModel(m, lcflow.ModelInfo{Provider: info.SpanProvider(), Model: info.Model}), info.Label, nil
}

// search returns the flows' search tool and its label.
func (c Config) search() (tools.Tool, string) {
	if c.Search != nil {
		if c.SearchLabel == "" {
			return c.Search, c.Search.Name()
		}
		return c.Search, c.SearchLabel
	}
	if key := c.getenv(tavily.EnvAPIKey); key != "" {
		url := c.getenv(tavily.EnvBaseURL)
		label := TavilySearchLabel
		if url != "" {
			label += " at " + url
		} else {
			// Given explicitly, so that tavily.New does not read the
			// process environment behind Getenv's back.
			url = tavily.DefaultBaseURL
		}
		return tavily.New(tavily.Config{APIKey: key, BaseURL: url}), label
	}
	return &OfflineSearch{Delay: c.step()}, OfflineSearchLabel
}
