// Package llm chooses the language model of the examples from the
// environment, and provides the models that need no network: Offline, the
// scripted model used when no provider is configured, and Scripted, a test
// double answering queued responses.
//
// FromEnv looks at, in order:
//
//	GEMINI_API_KEY  (GEMINI_MODEL, GEMINI_BASE_URL)  Gemini, through its OpenAI-compatible endpoint
//	OPENAI_API_KEY  (OPENAI_BASE_URL, OPENAI_MODEL)  OpenAI, or any OpenAI-compatible endpoint
//	OLLAMA_HOST / OLLAMA_MODEL                       a local or remote Ollama server
//
// and falls back to Offline, labelled "offline model (scripted, no
// network)" so that no one mistakes its output for a real model's.
//
// Gemini is reached through Google's OpenAI-compatible endpoint with
// langchaingo's openai provider, not through the googleai provider: that
// one brings Google's Cloud SDK and gRPC, which more than doubled the
// examples' first build.
//
// The provider packages live here, in the examples, and not in the
// library: a program that imports the library pays only for the providers
// it chooses. Wrap the model with lcflow.Model to have its calls reported
// in a flow's steps.
package llm

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/llms/ollama"
	"github.com/tmc/langchaingo/llms/openai"

	"github.com/flowsrun/flows/internal/redact"
)

// Providers, as reported in Info.Provider.
const (
	ProviderGemini  = "gemini"
	ProviderOpenAI  = "openai"
	ProviderOllama  = "ollama"
	ProviderOffline = "offline"
)

// Default models, used when the matching *_MODEL variable is empty.
const (
	DefaultGeminiModel = "gemini-2.0-flash"
	DefaultOpenAIModel = "gpt-4o-mini"
	DefaultOllamaModel = "llama3.2"
)

// OfflineLabel is the label of the offline model, shown in the flow list,
// the API and the demo page.
const OfflineLabel = "offline model (scripted, no network)"

const (
	defaultOpenAIBaseURL = "https://api.openai.com/v1"
	// DefaultGeminiBaseURL is Gemini's OpenAI-compatible endpoint, used
	// when GEMINI_BASE_URL is empty.
	DefaultGeminiBaseURL = "https://generativelanguage.googleapis.com/v1beta/openai"
	defaultOllamaPort    = "11434"
)

// Info describes the model FromEnv chose.
type Info struct {
	// Provider is one of the Provider constants.
	Provider string `json:"provider"`
	// Model is the provider's model name ("offline" for the offline model).
	Model string `json:"model"`
	// Offline is true for the offline model: its answers are scripted.
	Offline bool `json:"offline"`
	// Label says in a few words what answers: to show users.
	Label string `json:"label"`
}

// SpanProvider is the provider's gen_ai.provider.name in OpenTelemetry's
// GenAI conventions: "gcp.gemini" for Gemini, the Provider constant
// otherwise ("offline" labels the offline model in traces too).
func (i Info) SpanProvider() string {
	if i.Provider == ProviderGemini {
		return "gcp.gemini"
	}
	return i.Provider
}

// FromEnv returns the model the environment asks for, read through getenv
// (os.Getenv in a program, a map in tests). It makes no network call. A
// provider that is asked for but misconfigured (a malformed OLLAMA_HOST,
// say) is an error rather than a silent fall back to the offline model.
func FromEnv(getenv func(string) string) (llms.Model, Info, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }

	if key := env("GEMINI_API_KEY"); key != "" {
		model := or(env("GEMINI_MODEL"), DefaultGeminiModel)
		label := "Gemini " + model + " (Google AI)"
		base := env("GEMINI_BASE_URL")
		if base != "" {
			label = "Gemini " + model + " at " + redact.URL(base)
		}
		m, err := openAICompatible(key, model, or(base, DefaultGeminiBaseURL), "")
		if err != nil {
			return nil, Info{}, fmt.Errorf("llm: GEMINI_BASE_URL: %w", err)
		}
		return m, Info{Provider: ProviderGemini, Model: model, Label: label}, nil
	}

	if key := env("OPENAI_API_KEY"); key != "" {
		model := or(env("OPENAI_MODEL"), DefaultOpenAIModel)
		base := env("OPENAI_BASE_URL")
		label := "OpenAI " + model
		if base != "" {
			label = "OpenAI-compatible " + model + " at " + redact.URL(base)
		}
		m, err := openAICompatible(key, model, or(base, defaultOpenAIBaseURL), env("OPENAI_ORGANIZATION"))
		if err != nil {
			return nil, Info{}, fmt.Errorf("llm: OPENAI_BASE_URL: %w", err)
		}
		return m, Info{Provider: ProviderOpenAI, Model: model, Label: label}, nil
	}

	if host, model := env("OLLAMA_HOST"), env("OLLAMA_MODEL"); host != "" || model != "" {
		server, err := ollamaURL(host)
		if err != nil {
			return nil, Info{}, fmt.Errorf("llm: OLLAMA_HOST: %w", err)
		}
		model = or(model, DefaultOllamaModel)
		m, err := ollama.New(ollama.WithServerURL(server), ollama.WithModel(model))
		if err != nil {
			return nil, Info{}, fmt.Errorf("llm: ollama: %w", err)
		}
		return m, Info{Provider: ProviderOllama, Model: model, Label: "Ollama " + model + " at " + redact.URL(server)}, nil
	}

	return NewOffline(), Info{Provider: ProviderOffline, Model: "offline", Offline: true, Label: OfflineLabel}, nil
}

// openAICompatible returns langchaingo's openai provider for an endpoint
// that speaks OpenAI's chat API. Every option is given explicitly, so that
// the provider does not read the process environment behind getenv's back.
func openAICompatible(key, model, base, org string) (llms.Model, error) {
	if err := checkURL(base); err != nil {
		return nil, err
	}
	m, err := openai.New(
		openai.WithToken(key),
		openai.WithModel(model),
		openai.WithBaseURL(base),
		openai.WithOrganization(org),
	)
	if err != nil {
		return nil, fmt.Errorf("openai provider: %w", err)
	}
	return m, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkURL checks that raw is an http(s) URL. Its error shows raw without
// its credentials.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return redact.Error(err, redact.Secrets(raw)...)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", redact.URL(raw))
	}
	return nil
}

// ollamaURL turns OLLAMA_HOST as Ollama's own tools accept it ("host",
// "host:port", "http://host:port", or empty for the local default) into a
// URL. It is checked here because the provider's option exits the process
// on a malformed URL.
func ollamaURL(host string) (string, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	if !strings.Contains(host, "://") {
		host = "http://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		return "", redact.Error(err, redact.Secrets(host)...)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" {
		return "", fmt.Errorf("%q is not an Ollama server address", redact.URL(host))
	}
	if u.Port() == "" {
		u.Host += ":" + defaultOllamaPort
	}
	return u.String(), nil
}
