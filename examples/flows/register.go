// Package flows holds the example flows that the demo server runs:
// poem_flow, which writes a short poem, and web_search_flow, which answers a
// question from search results.
//
// Both are written in plain Go and use no network and no language model:
// their "model" is a few lines of scripted text and their search results are
// offline sample data. They exist to show what a flow looks like from the
// outside (several steps with real pauses, a tool result, streamed tokens
// and a final result) and are registered with the label
// {"model": "offline (no network)"} so that nobody mistakes their output for
// a real model's.
//
// Register them in a registry with Register, or with RegisterWith to choose
// their pace (tests make them fast):
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
)

// ModelLabel is the "model" label of the example flows, shown by the flows
// endpoint and the demo page.
const ModelLabel = "offline (no network)"

// Register adds poem_flow and web_search_flow to reg at their default pace.
// It fails, wrapping registry.ErrDuplicate, if either name is taken.
func Register(reg *registry.Registry) error { return RegisterWith(reg, Config{}) }

// RegisterWith adds poem_flow and web_search_flow to reg, paced by cfg.
func RegisterWith(reg *registry.Registry, cfg Config) error {
	model := registry.Label("model", ModelLabel)
	if err := reg.Register(PoemFlowName, Poem(cfg),
		registry.Description("Chooses a theme, then writes a short poem about it, streaming it as it goes."),
		model); err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	if err := reg.Register(WebSearchFlowName, WebSearch(cfg),
		registry.Description("Searches the web for a question (offline sample results) and composes an answer from what it found."),
		model); err != nil {
		return fmt.Errorf("example flows: %w", err)
	}
	return nil
}
