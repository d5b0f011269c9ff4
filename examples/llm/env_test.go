package llm_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/ollama"
	"github.com/tmc/langchaingo/llms/openai"

	"github.com/flowsrun/flows/examples/llm"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnvChoosesTheProvider(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want llm.Info
	}{
		{"nothing set", nil,
			llm.Info{Provider: llm.ProviderOffline, Model: "offline", Offline: true, Label: llm.OfflineLabel}},
		{"blank keys count as missing", map[string]string{"GEMINI_API_KEY": "  ", "OPENAI_API_KEY": ""},
			llm.Info{Provider: llm.ProviderOffline, Model: "offline", Offline: true, Label: llm.OfflineLabel}},
		{"gemini", map[string]string{"GEMINI_API_KEY": "g-key"},
			llm.Info{Provider: llm.ProviderGemini, Model: llm.DefaultGeminiModel, Label: "Gemini " + llm.DefaultGeminiModel + " (Google AI)"}},
		{"gemini model", map[string]string{"GEMINI_API_KEY": "g-key", "GEMINI_MODEL": "gemini-2.5-pro"},
			llm.Info{Provider: llm.ProviderGemini, Model: "gemini-2.5-pro", Label: "Gemini gemini-2.5-pro (Google AI)"}},
		{"gemini comes first", map[string]string{"GEMINI_API_KEY": "g-key", "OPENAI_API_KEY": "sk", "OLLAMA_HOST": "h"},
			llm.Info{Provider: llm.ProviderGemini, Model: llm.DefaultGeminiModel, Label: "Gemini " + llm.DefaultGeminiModel + " (Google AI)"}},
		{"openai", map[string]string{"OPENAI_API_KEY": "sk-test"},
			llm.Info{Provider: llm.ProviderOpenAI, Model: llm.DefaultOpenAIModel, Label: "OpenAI " + llm.DefaultOpenAIModel}},
		{"openai-compatible endpoint", map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://localhost:8000/v1", "OPENAI_MODEL": "qwen"},
			llm.Info{Provider: llm.ProviderOpenAI, Model: "qwen", Label: "OpenAI-compatible qwen at http://localhost:8000/v1"}},
		{"openai before ollama", map[string]string{"OPENAI_API_KEY": "sk-test", "OLLAMA_MODEL": "m"},
			llm.Info{Provider: llm.ProviderOpenAI, Model: llm.DefaultOpenAIModel, Label: "OpenAI " + llm.DefaultOpenAIModel}},
		{"ollama host without scheme or port", map[string]string{"OLLAMA_HOST": "gpu-box"},
			llm.Info{Provider: llm.ProviderOllama, Model: llm.DefaultOllamaModel, Label: "Ollama " + llm.DefaultOllamaModel + " at http://gpu-box:11434"}},
		{"ollama model alone uses the local server", map[string]string{"OLLAMA_MODEL": "mistral"},
			llm.Info{Provider: llm.ProviderOllama, Model: "mistral", Label: "Ollama mistral at http://127.0.0.1:11434"}},
		{"ollama full URL", map[string]string{"OLLAMA_HOST": "https://ollama.example:443", "OLLAMA_MODEL": "phi3"},
			llm.Info{Provider: llm.ProviderOllama, Model: "phi3", Label: "Ollama phi3 at https://ollama.example:443"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, info, err := llm.FromEnv(mapEnv(tt.env))
			require.NoError(t, err)
			require.NotNil(t, m)
			assert.Equal(t, tt.want, info)
			switch info.Provider {
			case llm.ProviderOffline:
				assert.IsType(t, &llm.Offline{}, m)
			case llm.ProviderOpenAI, llm.ProviderGemini:
				assert.IsType(t, &openai.LLM{}, m)
			case llm.ProviderOllama:
				assert.IsType(t, &ollama.LLM{}, m)
			}
		})
	}
}

func TestFromEnvRefusesMisconfiguration(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"openai base URL without scheme", map[string]string{"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": "localhost:8000"}, "OPENAI_BASE_URL"},
		{"gemini base URL without scheme", map[string]string{"GEMINI_API_KEY": "g", "GEMINI_BASE_URL": "localhost:8000"}, "GEMINI_BASE_URL"},
		{"ollama host that is no URL", map[string]string{"OLLAMA_HOST": "http://[::1"}, "OLLAMA_HOST"},
		{"ollama host with another scheme", map[string]string{"OLLAMA_HOST": "ftp://box"}, "OLLAMA_HOST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, err := llm.FromEnv(mapEnv(tt.env))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestFromEnvGeminiSpeaksOpenAI checks that Gemini is reached through its
// OpenAI-compatible endpoint with the key as a bearer token: no Google SDK.
func TestFromEnvGeminiSpeaksOpenAI(t *testing.T) {
	srv := newRecordingServer(t, `{"id": "c1", "object": "chat.completion", "created": 1, "model": "gemini-2.0-flash",
		"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from gemini"}, "finish_reason": "stop"}],
		"usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}`)

	m, info, err := llm.FromEnv(mapEnv(map[string]string{"GEMINI_API_KEY": "g-key", "GEMINI_BASE_URL": srv.URL + "/v1beta/openai"}))
	require.NoError(t, err)
	assert.Equal(t, llm.ProviderGemini, info.Provider)
	assert.Equal(t, "Gemini "+llm.DefaultGeminiModel+" at "+srv.URL+"/v1beta/openai", info.Label)
	assert.Zero(t, srv.hits.Load(), "FromEnv makes no call")

	out, err := llms.GenerateFromSinglePrompt(t.Context(), m, "hi")
	require.NoError(t, err)
	assert.Equal(t, "hello from gemini", out)
	assert.Equal(t, "/v1beta/openai/chat/completions", srv.path.Load())
	assert.Equal(t, "Bearer g-key", srv.auth.Load())
	assert.Equal(t, llm.DefaultGeminiModel, srv.requestedModel.Load())
}

// recordingServer answers every request with body and records the last
// request's path, Authorization header and JSON body.
type recordingServer struct {
	*httptest.Server
	hits           atomic.Int32
	path, auth     atomic.Value
	requestedModel atomic.Value
}

func newRecordingServer(t *testing.T, body string) *recordingServer {
	t.Helper()
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.hits.Add(1)
		rs.path.Store(r.URL.Path)
		rs.auth.Store(r.Header.Get("Authorization"))
		var req struct {
			Model string `json:"model"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		rs.requestedModel.Store(req.Model)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func TestFromEnvOpenAICompatibleEndpoint(t *testing.T) {
	srv := newRecordingServer(t, `{"id": "c1", "object": "chat.completion", "created": 1, "model": "local-model",
		"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the endpoint"}, "finish_reason": "stop"}],
		"usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}`)

	m, info, err := llm.FromEnv(mapEnv(map[string]string{
		"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": srv.URL + "/v1", "OPENAI_MODEL": "local-model",
	}))
	require.NoError(t, err)
	assert.Equal(t, llm.ProviderOpenAI, info.Provider)
	assert.Zero(t, srv.hits.Load(), "FromEnv makes no call")

	out, err := llms.GenerateFromSinglePrompt(t.Context(), m, "hi")
	require.NoError(t, err)
	assert.Equal(t, "hello from the endpoint", out)
	assert.Equal(t, int32(1), srv.hits.Load())
	assert.Equal(t, "/v1/chat/completions", srv.path.Load())
	assert.Equal(t, "Bearer sk-test", srv.auth.Load())
	assert.Equal(t, "local-model", srv.requestedModel.Load())
}

func TestFromEnvOllamaHost(t *testing.T) {
	// Ollama answers newline-delimited JSON.
	srv := newRecordingServer(t, `{"model": "tiny", "created_at": "2025-01-01T00:00:00Z", "message": {"role": "assistant", "content": "hello from ollama"}, "done": true}`+"\n")

	m, info, err := llm.FromEnv(mapEnv(map[string]string{"OLLAMA_HOST": srv.URL, "OLLAMA_MODEL": "tiny"}))
	require.NoError(t, err)
	assert.Equal(t, llm.ProviderOllama, info.Provider)
	assert.Zero(t, srv.hits.Load(), "FromEnv makes no call")

	out, err := llms.GenerateFromSinglePrompt(t.Context(), m, "hi")
	require.NoError(t, err)
	assert.Equal(t, "hello from ollama", out)
	assert.Equal(t, "/api/chat", srv.path.Load())
	assert.Equal(t, "tiny", srv.requestedModel.Load())
}
