package flows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/tmc/langchaingo/agents"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/flow/lcflow/tavily"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// The code of the README's "Adding a flow" section, kept here so that it
// compiles and runs.

// summaryFlow searches the web for a topic, then summarises what it found.
func summaryFlow(model llms.Model, search tools.Tool) *lcflow.Flow {
	find := lcflow.Step("Searching the web", lcflow.ToolChain(search, "topic", "results"))
	summarise := chains.NewLLMChain(lcflow.Model(model), prompts.NewPromptTemplate(
		"Summarise in three sentences what these search results say about {{.topic}}:\n{{.results}}",
		[]string{"topic", "results"}))

	f := lcflow.Chain(lcflow.Sequence(find, lcflow.Step("Summarising", summarise)))
	f.About = "Searches the web for a topic and summarises the results."
	f.InputDescriptions = map[string]string{"topic": "What to search for"}
	return f
}

// registerSummary registers summaryFlow as the README shows.
func registerSummary(reg *registry.Registry) error {
	model, info, err := llm.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	reg.MustRegister("summary_flow", summaryFlow(model, tavily.New(tavily.Config{})),
		registry.Label("model", info.Label))
	return nil
}

// registerResearch registers the README's agent, and returns it.
func registerResearch(reg *registry.Registry, model llms.Model, search tools.Tool) flow.Flow {
	agent := agents.NewOneShotAgent(lcflow.Model(model),
		[]tools.Tool{lcflow.Tool(search), lcflow.Tool(tools.Calculator{})},
		agents.WithCallbacksHandler(lcflow.Callbacks))
	executor := agents.NewExecutor(agent, agents.WithCallbacksHandler(lcflow.Callbacks))
	reg.MustRegister("research", lcflow.Chain(lcflow.QuietStep("Researching", executor)))

	e, err := reg.Lookup("research")
	if err != nil {
		panic(err)
	}
	return e.Flow
}

// plainFlow is the README's plain Go flow running a chain.
func plainFlow(summarise chains.Chain) flow.Flow {
	return flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Log("Preparing the text")
		h := lcflow.TaskHandler(t) // reports to t.Progress, records the calls in t.Checkpoints
		ctx = lcflow.WithHandler(ctx, h)
		return chains.Run(ctx, summarise, "Go is a programming language designed at Google.", chains.WithCallback(h))
	})
}

// printRun runs f with inputs, reporting to a recorder, and prints what
// the recorder got.
func printRun(f flow.Flow, inputs string) {
	rec := progress.NewRecorder()
	out, err := f.Run(context.Background(), &flow.Task{ID: "1", Attempt: 1, Inputs: json.RawMessage(inputs), Progress: rec})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	for _, s := range rec.Snapshot().Details.StepResults {
		if s.Type == progress.StepToolResult {
			fmt.Printf("tool_result: %s / %s\n", s.StepName, s.Tool)
			continue
		}
		fmt.Println("log:", s.Message)
	}
	fmt.Printf("tokens: %q\n", rec.Tokens())
	fmt.Printf("result: %q\n", out)
}

func Example_addingAFlow() {
	reg := registry.New()
	if err := registerSummary(reg); err != nil {
		fmt.Println("error:", err)
		return
	}

	// Here the flow runs with a scripted model and the offline search.
	model := llm.NewScripted("Go is a language from Google.")
	printRun(summaryFlow(model, &flows.OfflineSearch{}), `{"topic": "the Go language"}`)
	// Output:
	// log: Searching the web: started
	// log: Using tool web_search with input "the Go language"
	// tool_result: Searching the web / web_search
	// log: Searching the web: done
	// log: Summarising: started
	// log: Calling the language model
	// log: Summarising: done
	// tokens: "Go is a language from Google."
	// result: "Go is a language from Google."
}

func Example_agent() {
	model := llm.NewScripted(
		"Thought: I should compute it.\nAction: calculator\nAction Input: 6 * 7",
		"Thought: I now know the final answer.\nFinal Answer: 42",
	)
	printRun(registerResearch(registry.New(), model, &flows.OfflineSearch{}), `{"input": "What is 6 * 7?"}`)
	// Output:
	// log: Researching: started
	// log: Calling the language model
	// log: Using tool calculator with input "6 * 7"
	// tool_result: Researching / calculator
	// log: Calling the language model
	// log: Agent finished
	// log: Researching: done
	// tokens: ""
	// result: "42"
}

func Example_plainGo() {
	summarise := chains.NewLLMChain(lcflow.Model(llm.NewScripted("A language from Google.")),
		prompts.NewPromptTemplate("Summarise: {{.text}}", []string{"text"}))
	printRun(plainFlow(lcflow.Step("Summarising", summarise)), `{}`)
	// Output:
	// log: Preparing the text
	// log: Summarising: started
	// log: Calling the language model
	// log: Summarising: done
	// tokens: "A language from Google."
	// result: "A language from Google."
}
