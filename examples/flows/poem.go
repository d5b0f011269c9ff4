package flows

import (
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"

	"github.com/flowsrun/flows/flow/lcflow"
)

// Step names of poem_flow.
const (
	StepChooseTheme = "Choosing a theme"
	StepWritePoem   = "Writing the poem"
)

// Poem returns poem_flow, a flow without inputs: two LLM chains, named as
// steps, run in sequence. The first asks model for a theme (a QuietStep:
// the theme is not streamed), the second for a short poem about it, which
// streams token by token and is the task's final result.
func Poem(model llms.Model) *lcflow.Flow {
	m := lcflow.Model(model)
	theme := chains.NewLLMChain(m, prompts.NewPromptTemplate(
		"Suggest a theme for a short poem. Answer with the theme alone, in a few words, without quotes.", nil))
	theme.OutputKey = "theme"
	poem := chains.NewLLMChain(m, prompts.NewPromptTemplate(
		"Write a short poem about {{.theme}}. Four lines, no title.", []string{"theme"}))
	poem.OutputKey = "poem"

	f := lcflow.Chain(lcflow.Sequence(
		lcflow.QuietStep(StepChooseTheme, theme),
		lcflow.Step(StepWritePoem, poem),
	))
	f.About = "Asks the model for a theme, then for a short poem about it, streamed as it is written."
	return f
}
