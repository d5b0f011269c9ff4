package lcflow_test

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/tmc/langchaingo/llms"
)

// scriptedModel answers with queued responses in order, streaming each in
// word-sized chunks when asked to, and records the prompts it got.
type scriptedModel struct {
	mu        sync.Mutex
	responses []string
	prompts   []string
}

var errScriptDone = errors.New("scripted model: no response left")

func newScripted(responses ...string) *scriptedModel {
	return &scriptedModel{responses: responses}
}

func (m *scriptedModel) GenerateContent(ctx context.Context, msgs []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	m.mu.Lock()
	m.prompts = append(m.prompts, promptText(msgs))
	if len(m.responses) == 0 {
		m.mu.Unlock()
		return nil, errScriptDone
	}
	text := m.responses[0]
	m.responses = m.responses[1:]
	m.mu.Unlock()
	return respond(ctx, text, options)
}

func (m *scriptedModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

func (m *scriptedModel) Prompts() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.prompts...)
}

// echoModel answers "echo: " followed by the prompt's last line; it keeps
// no state, so concurrent tasks may share it.
type echoModel struct{}

func (echoModel) GenerateContent(ctx context.Context, msgs []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	p := strings.TrimSpace(promptText(msgs))
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	return respond(ctx, "echo: "+p, options)
}

func (m echoModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

// failingModel fails every call with err.
type failingModel struct{ err error }

func (m failingModel) GenerateContent(context.Context, []llms.MessageContent, ...llms.CallOption) (*llms.ContentResponse, error) {
	return nil, m.err
}

func (m failingModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

func respond(ctx context.Context, text string, options []llms.CallOption) (*llms.ContentResponse, error) {
	var o llms.CallOptions
	for _, opt := range options {
		opt(&o)
	}
	if o.StreamingFunc != nil {
		for _, chunk := range wordChunks(text) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := o.StreamingFunc(ctx, []byte(chunk)); err != nil {
				return nil, err
			}
		}
	}
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: text}}}, nil
}

// wordChunks splits s into chunks that each end after a space, so that
// they concatenate to s.
func wordChunks(s string) []string {
	var out []string
	for s != "" {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i+1])
		s = s[i+1:]
	}
	return out
}

func promptText(msgs []llms.MessageContent) string {
	var b strings.Builder
	for _, m := range msgs {
		for _, p := range m.Parts {
			if t, ok := p.(llms.TextContent); ok {
				b.WriteString(t.Text)
			}
		}
	}
	return b.String()
}
