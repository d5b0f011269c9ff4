package flows_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/registry"
)

// registered registers the example flows configured by cfg in a new
// registry and returns them by name.
func registered(t *testing.T, cfg flows.Config) map[string]flow.Flow {
	t.Helper()
	reg := registry.New()
	require.NoError(t, flows.RegisterWith(reg, cfg))
	out := map[string]flow.Flow{}
	for _, info := range reg.List() {
		e, err := reg.Lookup(info.Name)
		require.NoError(t, err)
		out[info.Name] = e.Flow
	}
	return out
}

// labels registers the example flows configured by cfg and returns their
// labels by flow name.
func labels(t *testing.T, cfg flows.Config) map[string]map[string]string {
	t.Helper()
	reg := registry.New()
	require.NoError(t, flows.RegisterWith(reg, cfg))
	out := map[string]map[string]string{}
	for _, info := range reg.List() {
		out[info.Name] = info.Labels
	}
	return out
}

func TestRegisterLabelsTheModelAndSearchInUse(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		model  string
		search string
	}{
		{
			name:   "nothing set: offline",
			model:  llm.OfflineLabel,
			search: flows.OfflineSearchLabel,
		},
		{
			name:   "Gemini",
			env:    map[string]string{"GEMINI_API_KEY": "test-key"},
			model:  "Gemini " + llm.DefaultGeminiModel + " (Google AI)",
			search: flows.OfflineSearchLabel,
		},
		{
			name:   "Gemini with a model and Tavily",
			env:    map[string]string{"GEMINI_API_KEY": "test-key", "GEMINI_MODEL": "gemini-2.5-pro", "TAVILY_API_KEY": "tvly-test"},
			model:  "Gemini gemini-2.5-pro (Google AI)",
			search: flows.TavilySearchLabel,
		},
		{
			name:   "OpenAI-compatible endpoint",
			env:    map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"},
			model:  "OpenAI-compatible " + llm.DefaultOpenAIModel + " at http://127.0.0.1:1/v1",
			search: flows.OfflineSearchLabel,
		},
		{
			name:   "Ollama and Tavily at a custom URL",
			env:    map[string]string{"OLLAMA_MODEL": "qwen3", "TAVILY_API_KEY": "tvly-test", "TAVILY_API_URL": "http://127.0.0.1:1"},
			model:  "Ollama qwen3 at http://127.0.0.1:11434",
			search: flows.TavilySearchLabel + " at http://127.0.0.1:1",
		},
		{
			name:   "blank keys count as unset",
			env:    map[string]string{"GEMINI_API_KEY": "  ", "TAVILY_API_KEY": " "},
			model:  llm.OfflineLabel,
			search: flows.OfflineSearchLabel,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := labels(t, flows.Config{Getenv: envOf(tt.env)})
			require.Len(t, got, 3)
			for name, l := range got {
				assert.Equal(t, tt.model, l[flows.LabelModel], name)
			}
			assert.NotContains(t, got[flows.PoemFlowName], flows.LabelSearch, "poem_flow does not search")
			assert.Equal(t, tt.search, got[flows.WebSearchFlowName][flows.LabelSearch])
			assert.Equal(t, tt.search, got[flows.ResearchAgentName][flows.LabelSearch])
		})
	}
}

func TestRegisterLabelsGivenModelAndSearch(t *testing.T) {
	search := &flows.OfflineSearch{}
	got := labels(t, flows.Config{Getenv: noEnv, Model: llm.NewScripted(), Search: search})
	assert.Equal(t, flows.CustomModelLabel, got[flows.PoemFlowName][flows.LabelModel])
	assert.Equal(t, search.Name(), got[flows.WebSearchFlowName][flows.LabelSearch])

	got = labels(t, flows.Config{Getenv: noEnv, Model: llm.NewScripted(), ModelLabel: "scripted", Search: search, SearchLabel: "canned"})
	assert.Equal(t, "scripted", got[flows.ResearchAgentName][flows.LabelModel])
	assert.Equal(t, "canned", got[flows.ResearchAgentName][flows.LabelSearch])
}

func TestRegisterDescribesEveryFlow(t *testing.T) {
	reg := registry.New()
	require.NoError(t, flows.RegisterWith(reg, fastOffline))
	var names []string
	for _, info := range reg.List() {
		names = append(names, info.Name)
		assert.NotEmpty(t, info.Description, info.Name)
		require.NotNil(t, info.Schema, info.Name)
		if info.Name == flows.PoemFlowName {
			assert.Empty(t, info.Schema.Properties, "poem_flow takes no inputs")
		} else {
			assert.Equal(t, []string{"question"}, info.Schema.Required, info.Name)
		}
	}
	assert.Equal(t, []string{flows.PoemFlowName, flows.ResearchAgentName, flows.WebSearchFlowName}, names)
}

func TestRegisterFailures(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		reg := registry.New()
		require.NoError(t, flows.RegisterWith(reg, fastOffline))
		assert.ErrorIs(t, flows.RegisterWith(reg, fastOffline), registry.ErrDuplicate)
	})
	t.Run("misconfigured provider", func(t *testing.T) {
		err := flows.RegisterWith(registry.New(), flows.Config{Getenv: envOf(map[string]string{"OLLAMA_HOST": "ftp://nowhere"})})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "OLLAMA_HOST")
	})
}
