package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/tmc/langchaingo/llms"

	exampleflows "github.com/flowsrun/flows/examples/flows"
)

// retryingPoet is the model of poem_flow for one task whose first attempt
// fails half-way through the poem: the theme, then on attempt 1 the words
// "Dropped words " streamed before a 503, then on attempt 2 (the theme
// replayed) "Second try, " streamed, a wait until gate is closed, and
// "all of it." to end the poem.
type retryingPoet struct {
	gate chan struct{}

	mu    sync.Mutex
	calls int
}

func (m *retryingPoet) GenerateContent(ctx context.Context, _ []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	var opts llms.CallOptions
	for _, o := range options {
		o(&opts)
	}
	stream := func(s string) {
		if opts.StreamingFunc != nil {
			_ = opts.StreamingFunc(ctx, []byte(s))
		}
	}
	m.mu.Lock()
	m.calls++
	n := m.calls
	m.mu.Unlock()
	switch n {
	case 1:
		return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: "rain"}}}, nil
	case 2:
		stream("Dropped words ")
		return nil, errors.New("API returned unexpected status code: 503: overloaded")
	default:
		stream("Second try, ")
		select {
		case <-m.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		stream("all of it.")
		return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: "Second try, all of it."}}}, nil
	}
}

func (m *retryingPoet) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

// TestDemoPageLiveTextRestartsWithTheAttempt: the text a card shows as
// the model writes it belongs to the attempt under way. When an attempt
// that streamed part of an answer fails and the next streams it again
// from the start, the card drops what the failed attempt streamed rather
// than showing both one after the other.
func TestDemoPageLiveTextRestartsWithTheAttempt(t *testing.T) {
	t.Parallel()
	browser := startChromium(t)
	poet := &retryingPoet{gate: make(chan struct{})}
	srv := startPageServer(t, 0, 0, func(c *config) { c.Flows.Model = poet })
	p := openPage(t, browser, srv.URL, artifactsDir(t))

	id := p.startFlow(exampleflows.PoemFlowName, nil)
	card := p.waitCard(id, "attempt 2's first words", `c.live.includes('Second try')`)
	assert.Equal(t, "Second try, ", card.Live, "the failed attempt's words are gone")
	assert.True(t, card.LiveShown)
	assert.Contains(t, strings.Join(card.Steps, "\n"), "attempt 2 of 3 starts")

	close(poet.gate)
	card = p.waitCard(id, "the poem task's SUCCESS", `c.state === 'SUCCESS'`)
	assert.Equal(t, "Second try, all of it.", card.Live)
	assertCardMatches(t, card, srv.snapshot(t, id))
}
