package llm

import (
	"context"
	"errors"
	"sync"

	"github.com/tmc/langchaingo/llms"
)

// ErrScriptExhausted is returned by a Scripted model called once more than
// it has responses for.
var ErrScriptExhausted = errors.New("llm: scripted model has no response left")

// Scripted is a language model for tests: it answers its queued responses
// in order, streaming each in word-sized chunks (see Chunks) when the call
// sets a streaming function, and records the prompts it gets. A queued
// error is returned instead of a response. It is safe for concurrent use,
// although concurrent callers then share one queue.
type Scripted struct {
	mu      sync.Mutex
	queue   []scripted
	prompts []string
}

type scripted struct {
	text string
	err  error
}

var _ llms.Model = (*Scripted)(nil)

// NewScripted returns a Scripted model answering responses in order.
func NewScripted(responses ...string) *Scripted {
	s := &Scripted{}
	for _, r := range responses {
		s.Push(r)
	}
	return s
}

// Push queues a response.
func (s *Scripted) Push(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, scripted{text: text})
}

// PushError queues an error, returned by the call that would have got the
// next response.
func (s *Scripted) PushError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, scripted{err: err})
}

// Prompts returns the text of every prompt received so far, in order.
func (s *Scripted) Prompts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.prompts...)
}

// Remaining returns how many queued responses are left.
func (s *Scripted) Remaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// GenerateContent records the prompt and answers the next queued response.
func (s *Scripted) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	s.mu.Lock()
	s.prompts = append(s.prompts, promptText(messages))
	if len(s.queue) == 0 {
		s.mu.Unlock()
		return nil, ErrScriptExhausted
	}
	next := s.queue[0]
	s.queue = s.queue[1:]
	s.mu.Unlock()
	if next.err != nil {
		return nil, next.err
	}
	return respond(ctx, next.text, 0, options)
}

// Call implements llms.Model.
func (s *Scripted) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, s, prompt, options...)
}
