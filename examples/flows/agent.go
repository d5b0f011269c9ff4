package flows

import (
	"context"

	"github.com/tmc/langchaingo/agents"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
)

// StepResearch is the step research_agent's agent runs in.
const StepResearch = "Researching"

// agentMaxIterations bounds the plan-act rounds of research_agent.
const agentMaxIterations = 5

// ResearchAgent returns research_agent, a flow of one required string
// input, "question", answered by a langchaingo MRKL agent
// (agents.NewOneShotAgent) that may call two tools: search and
// langchaingo's calculator. Each action of the agent is a log entry
// ("Using tool calculator with input ..."), each tool output a
// tool_result of step "Researching", and the agent's final answer the
// task's final result.
//
// The agent's step is quiet: its model writes thoughts and actions, not
// the answer, so no tokens stream; the steps do.
func ResearchAgent(model llms.Model, search tools.Tool) flow.Flow {
	agent := agents.NewOneShotAgent(lcflow.Model(model),
		[]tools.Tool{lcflow.Tool(search), lcflow.Tool(tools.Calculator{})},
		agents.WithCallbacksHandler(lcflow.Callbacks))
	executor := agents.NewExecutor(agent,
		agents.WithCallbacksHandler(lcflow.Callbacks),
		agents.WithMaxIterations(agentMaxIterations),
		// An answer the agent cannot parse goes back to the model as an
		// observation instead of failing the task.
		agents.WithParserErrorHandler(agents.NewParserErrorHandler(nil)))

	// The MRKL prompt calls its question "input"; the flow's input is
	// "question", like web_search_flow's.
	toInput := chains.NewTransform(func(_ context.Context, in map[string]any, _ ...chains.ChainCallOption) (map[string]any, error) {
		return map[string]any{"input": in["question"]}, nil
	}, []string{"question"}, []string{"input"})

	f := lcflow.Chain(lcflow.Sequence(toInput, lcflow.QuietStep(StepResearch, executor)))
	f.About = "An agent that answers a question, choosing between web search and a calculator; its actions appear as it takes them."
	f.InputDescriptions = map[string]string{"question": "The question for the agent, e.g. \"What is 12 * 7?\" or \"Who designed Go?\""}
	return questionFlow{f}
}
