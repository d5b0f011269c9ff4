package llm

import (
	"context"
	"strings"
	"time"
	"unicode"

	"github.com/tmc/langchaingo/llms"
)

// Chunks splits text into word-sized chunks, each word with the spaces
// that follow it, so that the chunks concatenate to text.
func Chunks(text string) []string {
	var out []string
	start := 0
	inSpace := false
	for i, r := range text {
		space := unicode.IsSpace(r)
		if inSpace && !space {
			out = append(out, text[start:i])
			start = i
		}
		inSpace = space
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

// respond streams text through the streaming function of options, if one
// is set, one chunk of Chunks at a time with delay between chunks, and
// returns it as a response. It stops with the context's error when ctx is
// done, and with the streaming function's error when that fails.
func respond(ctx context.Context, text string, delay time.Duration, options []llms.CallOption) (*llms.ContentResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o llms.CallOptions
	for _, opt := range options {
		opt(&o)
	}
	if o.StreamingFunc != nil {
		for i, chunk := range Chunks(text) {
			if i > 0 && delay > 0 {
				if err := sleep(ctx, delay); err != nil {
					return nil, err
				}
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := o.StreamingFunc(ctx, []byte(chunk)); err != nil {
				return nil, err
			}
		}
	}
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: text, StopReason: "stop"}}}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// promptText joins the text parts of messages, one message per line.
func promptText(messages []llms.MessageContent) string {
	var b strings.Builder
	for i, m := range messages {
		if i > 0 {
			b.WriteByte('\n')
		}
		for _, p := range m.Parts {
			if t, ok := p.(llms.TextContent); ok {
				b.WriteString(t.Text)
			}
		}
	}
	return b.String()
}
