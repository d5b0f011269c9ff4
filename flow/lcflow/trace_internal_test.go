package lcflow

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/tmc/langchaingo/llms"
)

// TestUsage reads the token counts of answers shaped as langchaingo's
// providers shape them, and no counts where they carry none.
func TestUsage(t *testing.T) {
	choice := func(info map[string]any) *llms.ContentChoice { return &llms.ContentChoice{GenerationInfo: info} }
	type counts struct {
		in    int64
		inOK  bool
		out   int64
		outOK bool
	}
	for _, tc := range []struct {
		name string
		resp *llms.ContentResponse
		want counts
	}{
		{"nil", nil, counts{}},
		{"no choices", &llms.ContentResponse{}, counts{}},
		{"no generation info", &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: "hi"}}}, counts{}},
		{"openai", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"PromptTokens": 12, "CompletionTokens": 5, "TotalTokens": 17}),
			choice(map[string]any{"PromptTokens": 12, "CompletionTokens": 5, "TotalTokens": 17}),
		}}, counts{12, true, 5, true}},
		{"anthropic", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"InputTokens": 30, "OutputTokens": 7, "CacheReadInputTokens": 0}),
		}}, counts{30, true, 7, true}},
		{"googleai int32", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"input_tokens": int32(9), "output_tokens": int32(4)}),
		}}, counts{9, true, 4, true}},
		{"decoded JSON", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"PromptTokens": float64(3), "CompletionTokens": 2.5}),
		}}, counts{3, true, 0, false}},
		{"the first choice with counts", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			nil, choice(map[string]any{"model": "x"}), choice(map[string]any{"OutputTokens": 8}),
		}}, counts{0, false, 8, true}},
		{"zeros: no usage sent", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"PromptTokens": 0, "CompletionTokens": 0, "TotalTokens": 0}),
		}}, counts{}},
		{"negative or not a number", &llms.ContentResponse{Choices: []*llms.ContentChoice{
			choice(map[string]any{"PromptTokens": -1, "CompletionTokens": "5"}),
		}}, counts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got counts
			got.in, got.inOK, got.out, got.outOK = usage(tc.resp)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestDescribedModelWrapsOnce: describing a model Model wrapped wraps it
// once, with the new info; Model of a described model keeps its info.
func TestDescribedModelWrapsOnce(t *testing.T) {
	base := fakeModel{id: 1}
	info := ModelInfo{Provider: "openai", Model: "m-1"}
	d := DescribedModel(Model(base), info)
	assert.Equal(t, reportingModel{m: base, info: info}, d)
	assert.Equal(t, d, Model(d), "Model keeps the info")
	other := ModelInfo{Provider: "anthropic"}
	assert.Equal(t, reportingModel{m: base, info: other}, DescribedModel(d, other), "the info is replaced")
	assert.Panics(t, func() { DescribedModel(nil, info) })
}

// fakeModel is a model that is never called.
type fakeModel struct {
	llms.Model
	id int
}
