// Package flows holds the example flows that the demo server and the
// example worker run, written as langchaingo chains and an agent and turned
// into flows with lcflow, so that their steps appear live without
// reporting code of their own:
//
//   - poem_flow: the model suggests a theme, then writes a short poem about
//     it; the poem streams token by token.
//   - web_search_flow: searches the web for a question, then answers it
//     from the results, which appear as one tool_result.
//   - research_agent: a langchaingo agent that answers a question by
//     choosing between web search and a calculator; each action and tool
//     result appears as it happens.
//
// The model and the search tool are chosen from the environment (see
// Config): a real model when GEMINI_API_KEY, OPENAI_API_KEY or
// OLLAMA_HOST/OLLAMA_MODEL is set, Tavily when TAVILY_API_KEY is set, and
// offline stand-ins otherwise, so that the demo runs with no key and no
// network. Each flow is registered with labels naming the model and the
// search tool in use, such as {"model": "offline model (scripted, no
// network)", "search": "offline sample data"}, which the flows endpoint
// lists and the demo page shows, so that nobody mistakes scripted output
// for a real model's.
//
//	reg := registry.New()
//	if err := flows.Register(reg); err != nil {
//		return err
//	}
package flows

import (
	"fmt"

	"github.com/flowsrun/flows/registry"
)

// Names the example flows are registered under.
const (
	PoemFlowName      = "poem_flow"
	WebSearchFlowName = "web_search_flow"
	ResearchAgentName = "research_agent"
)

// Keys of the labels the example flows are registered with.
const (
	// LabelModel names the language model the flows use.
	LabelModel = "model"
	// LabelSearch names the web-search tool of the flows that search.
	LabelSearch = "search"
)

// Register adds the example flows to reg, with the model and search tool
// the environment asks for (see Config) at the default pace. It fails,
// wrapping registry.ErrDuplicate, if a name is taken, and with the
// configuration error of a provider that is asked for but misconfigured.
func Register(reg *registry.Registry) error { return RegisterWith(reg, Config{}) }

// RegisterWith adds the example flows to reg, configured by cfg.
func RegisterWith(reg *registry.Registry, cfg Config) error {
	model, modelLabel, err := cfg.model()
	if err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	search, searchLabel := cfg.search()
	labelModel := registry.Label(LabelModel, modelLabel)
	labelSearch := registry.Label(LabelSearch, searchLabel)

	if err := reg.Register(PoemFlowName, Poem(model), labelModel); err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	if err := reg.Register(WebSearchFlowName, WebSearch(model, search), labelModel, labelSearch); err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	if err := reg.Register(ResearchAgentName, ResearchAgent(model, search), labelModel, labelSearch); err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	return nil
}
