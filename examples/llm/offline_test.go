package llm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/agents"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/tools"

	"github.com/flowsrun/flows/examples/llm"
)

// generate calls m with prompt, collecting the streamed chunks.
func generate(ctx context.Context, m llms.Model, prompt string) (string, []string, error) {
	var chunks []string
	out, err := llms.GenerateFromSinglePrompt(ctx, m, prompt, llms.WithStreamingFunc(func(_ context.Context, c []byte) error {
		chunks = append(chunks, string(c))
		return nil
	}))
	return out, chunks, err
}

// assertWordChunks checks that chunks concatenate to text and that each
// is one word with the spaces after it.
func assertWordChunks(t *testing.T, text string, chunks []string) {
	t.Helper()
	assert.Equal(t, text, strings.Join(chunks, ""))
	for _, c := range chunks {
		word := strings.TrimRightFunc(c, unicode.IsSpace)
		assert.False(t, strings.ContainsFunc(word, unicode.IsSpace), "chunk %q holds more than one word", c)
	}
}

const searchPrompt = `Answer the question "who designed Go?" using these search results:
{"query": "who designed Go?", "results": [
 {"title": "Go (programming language)", "url": "https://en.wikipedia.org/wiki/Go_(programming_language)", "content": "Go was designed at Google by Robert Griesemer, Rob Pike and Ken Thompson.", "score": 0.9},
 {"title": "go.dev", "url": "https://go.dev", "content": "Go is an open source language.", "score": 0.5},
 {"title": "third", "url": "https://example.com", "content": "never quoted", "score": 0.1}]}`

func TestOfflineReplies(t *testing.T) {
	tests := []struct {
		name   string
		prompt string
		check  func(t *testing.T, reply string)
	}{
		{"theme", "Suggest a theme for a poem. Answer with the theme only.", func(t *testing.T, reply string) {
			assert.NotEmpty(t, reply)
			assert.NotContains(t, reply, "\n", "a theme is one line")
		}},
		{"poem about a subject", "Write a short poem about the harbour at night.\nKeep it short.", func(t *testing.T, reply string) {
			assert.Contains(t, strings.ToLower(reply), "the harbour at night")
			assert.Len(t, strings.Split(reply, "\n"), 4)
		}},
		{"poem without a subject", "Write me a poem!", func(t *testing.T, reply string) {
			assert.Len(t, strings.Split(reply, "\n"), 4)
		}},
		{"search results", searchPrompt, func(t *testing.T, reply string) {
			assert.True(t, strings.HasPrefix(reply, "Based on the search results:"))
			assert.Contains(t, reply, "Robert Griesemer, Rob Pike and Ken Thompson")
			assert.Contains(t, reply, "https://en.wikipedia.org/wiki/Go_(programming_language)")
			assert.Contains(t, reply, "https://go.dev")
			assert.NotContains(t, reply, "never quoted", "two results are quoted")
		}},
		{"empty search results", `Question: why? Results: {"results": []}`, func(t *testing.T, reply string) {
			assert.Contains(t, reply, "found nothing")
		}},
		{"anything else", "Translate 'cat' into French.", func(t *testing.T, reply string) {
			assert.Contains(t, reply, llm.OfflineLabel)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &llm.Offline{}
			reply, chunks, err := generate(t.Context(), m, tt.prompt)
			require.NoError(t, err)
			tt.check(t, reply)
			assert.Equal(t, m.Reply(tt.prompt), reply)
			assertWordChunks(t, reply, chunks)
			if strings.Count(reply, " ") > 0 {
				assert.Greater(t, len(chunks), 1, "the reply is streamed in several chunks")
			}

			again, _, err := generate(t.Context(), &llm.Offline{}, tt.prompt)
			require.NoError(t, err)
			assert.Equal(t, reply, again, "the same prompt gets the same reply")
		})
	}
}

func TestOfflineThemeThenPoem(t *testing.T) {
	m := &llm.Offline{}
	theme := m.Reply("Suggest a theme for a poem.")
	poem := m.Reply(fmt.Sprintf("Write a short poem about %s.", theme))
	assert.Contains(t, strings.ToLower(poem), theme, "the poem is about the suggested theme")
}

func TestOfflineDrivesAnAgent(t *testing.T) {
	tests := []struct {
		name     string
		question string
		tools    []tools.Tool
		want     string
	}{
		{"arithmetic goes to the calculator", "What is (6 + 1) * 6?", []tools.Tool{searchTool{}, tools.Calculator{}},
			"The answer is 42."},
		{"other questions go to search", "Who designed Go?", []tools.Tool{tools.Calculator{}, searchTool{}},
			"Based on the search results: Go was designed at Google. (Go, https://go.dev)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := agents.NewOneShotAgent(&llm.Offline{}, tt.tools)
			executor := agents.NewExecutor(agent, agents.WithMaxIterations(3))
			out, err := chains.Run(t.Context(), executor, tt.question)
			require.NoError(t, err)
			assert.Equal(t, tt.want, out)
		})
	}
}

type searchTool struct{}

func (searchTool) Name() string        { return "web_search" }
func (searchTool) Description() string { return "searches the web" }
func (searchTool) Call(context.Context, string) (string, error) {
	return `{"query": "q", "results": [{"title": "Go", "url": "https://go.dev", "content": "Go was designed at Google."}]}`, nil
}

func TestOfflineHonoursCancellation(t *testing.T) {
	t.Run("before the call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, chunks, err := generate(ctx, &llm.Offline{}, "Write a poem about the sea.")
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, chunks)
	})
	t.Run("while streaming", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var chunks []string
		_, err := (&llm.Offline{Delay: 1}).GenerateContent(ctx,
			[]llms.MessageContent{llms.TextParts(llms.ChatMessageTypeHuman, "Write a poem about the sea.")},
			llms.WithStreamingFunc(func(_ context.Context, c []byte) error {
				chunks = append(chunks, string(c))
				if len(chunks) == 2 {
					cancel()
				}
				return nil
			}))
		require.ErrorIs(t, err, context.Canceled)
		assert.Len(t, chunks, 2, "no chunk is streamed after the cancellation")
	})
	t.Run("streaming function error", func(t *testing.T) {
		errStop := errors.New("stop")
		_, err := (&llm.Offline{}).GenerateContent(t.Context(),
			[]llms.MessageContent{llms.TextParts(llms.ChatMessageTypeHuman, "Write a poem about the sea.")},
			llms.WithStreamingFunc(func(context.Context, []byte) error { return errStop }))
		require.ErrorIs(t, err, errStop)
	})
}

func TestChunks(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"word", []string{"word"}},
		{"two words", []string{"two ", "words"}},
		{"  leading", []string{"  ", "leading"}},
		{"line one\nline  two\n", []string{"line ", "one\n", "line  ", "two\n"}},
		{"héllo wörld", []string{"héllo ", "wörld"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := llm.Chunks(tt.in)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, strings.Join(got, ""))
		})
	}
}

func TestScripted(t *testing.T) {
	errDown := errors.New("provider down")
	m := llm.NewScripted("first answer here", "second")
	m.PushError(errDown)

	out, chunks, err := generate(t.Context(), m, "prompt one")
	require.NoError(t, err)
	assert.Equal(t, "first answer here", out)
	assert.Equal(t, []string{"first ", "answer ", "here"}, chunks)

	out, err = m.Call(t.Context(), "prompt two")
	require.NoError(t, err)
	assert.Equal(t, "second", out, "without a streaming function the answer is returned whole")

	_, err = m.Call(t.Context(), "prompt three")
	require.ErrorIs(t, err, errDown)
	_, err = m.Call(t.Context(), "prompt four")
	require.ErrorIs(t, err, llm.ErrScriptExhausted)

	assert.Equal(t, []string{"prompt one", "prompt two", "prompt three", "prompt four"}, m.Prompts())
	assert.Zero(t, m.Remaining())
}
