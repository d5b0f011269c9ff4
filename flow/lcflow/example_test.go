package lcflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/progress"
)

// poemModel stands for a real provider (googleai, openai, ollama...): it
// suggests a theme, then writes a one-line poem, streaming it word by word.
type poemModel struct{}

func (poemModel) GenerateContent(ctx context.Context, msgs []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	var o llms.CallOptions
	for _, opt := range options {
		opt(&o)
	}
	text := "the sea"
	if prompt := msgs[0].Parts[0].(llms.TextContent).Text; strings.Contains(prompt, "poem about") {
		text = "Waves fold the light, and the sea keeps it."
	}
	if o.StreamingFunc != nil {
		for _, w := range strings.SplitAfter(text, " ") {
			if err := o.StreamingFunc(ctx, []byte(w)); err != nil {
				return nil, err
			}
		}
	}
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: text}}}, nil
}

func (m poemModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

func Example() {
	model := lcflow.Model(poemModel{})
	theme := chains.NewLLMChain(model, prompts.NewPromptTemplate("Suggest a theme for a poem.", nil))
	theme.OutputKey = "theme"
	poem := chains.NewLLMChain(model, prompts.NewPromptTemplate("Write a short poem about {{.theme}}.", []string{"theme"}))
	poemFlow := lcflow.Chain(lcflow.Sequence(
		lcflow.QuietStep("Choosing a theme", theme),
		lcflow.Step("Writing the poem", poem),
	))
	// Register poemFlow with registry.MustRegister("poem_flow", poemFlow);
	// here it runs directly, reporting to a Recorder.

	rec := progress.NewRecorder()
	result, err := poemFlow.Run(context.Background(), &flow.Task{ID: "1", Inputs: json.RawMessage(`{}`), Progress: rec})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	for _, s := range rec.Snapshot().Details.StepResults {
		fmt.Println(s.Type+":", s.Message)
	}
	fmt.Printf("tokens: %q\n", rec.Tokens())
	fmt.Println("result:", result)
	// Output:
	// log: Choosing a theme: started
	// log: Calling the language model
	// log: Choosing a theme: done
	// log: Writing the poem: started
	// log: Calling the language model
	// log: Writing the poem: done
	// tokens: "Waves fold the light, and the sea keeps it."
	// result: Waves fold the light, and the sea keeps it.
}
