package flows

import (
	"encoding/json"
	"strings"

	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
)

// Step names of web_search_flow.
const (
	StepSearch = "Searching the web"
	StepAnswer = "Answering the question"
)

// questionDescription describes the "question" input of the flows that
// take one.
const questionDescription = "The question to search the web for and answer."

// answerPrompt asks for an answer grounded in the search results.
const answerPrompt = `Answer the question below using only the web search results that follow it. ` +
	`Cite the URLs of the results you use. If the results do not answer the question, say so.

Question: {{.question}}

Search results (JSON):
{{.search_results}}

Answer:`

// WebSearch returns web_search_flow, a flow of one required string input,
// "question": a step calls search with the question (its output, JSON for
// both OfflineSearch and the tavily tool, is one tool_result of step
// "Searching the web"), then an LLM chain answers the question from the
// results, streaming the answer, which is the final result. A blank
// question is refused when the task is started.
func WebSearch(model llms.Model, search tools.Tool) flow.Flow {
	answer := chains.NewLLMChain(lcflow.Model(model),
		prompts.NewPromptTemplate(answerPrompt, []string{"question", "search_results"}))
	answer.OutputKey = "answer"

	f := lcflow.Chain(lcflow.Sequence(
		lcflow.Step(StepSearch, lcflow.ToolChain(search, "question", "search_results")),
		lcflow.Step(StepAnswer, answer),
	))
	f.About = "Searches the web for a question, then answers it from the results, streaming the answer."
	f.InputDescriptions = map[string]string{"question": questionDescription}
	return questionFlow{f}
}

// questionFlow is an lcflow flow whose "question" input must not be blank.
type questionFlow struct{ *lcflow.Flow }

// Validate refuses what the chain's own check refuses, and a blank
// question, so that both are answered with 422 at start-task rather than
// run.
func (f questionFlow) Validate(inputs json.RawMessage) (json.RawMessage, error) {
	norm, err := f.Flow.Validate(inputs)
	if err != nil {
		return nil, err
	}
	var in struct {
		Question string `json:"question"`
	}
	if err := json.Unmarshal(norm, &in); err != nil {
		return nil, &flow.InputError{Field: "question", Reason: "must be a string"}
	}
	if strings.TrimSpace(in.Question) == "" {
		return nil, &flow.InputError{Field: "question", Reason: "must not be blank"}
	}
	return norm, nil
}
