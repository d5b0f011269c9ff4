package flows

import (
	"context"
	"iter"
	"strings"
	"time"

	"github.com/flowsrun/flows/progress"
)

// Default pauses of the example flows: slow enough for a person watching
// the demo page to see each step arrive.
const (
	DefaultStepDelay  = 700 * time.Millisecond
	DefaultTokenDelay = 40 * time.Millisecond
)

// Config sets the pace of the example flows. The zero value gives the
// default pace; tests use tiny delays.
type Config struct {
	// StepDelay is the pause taken by each step, standing for the work a
	// real flow would do there. Zero means DefaultStepDelay; a negative
	// value means no pause.
	StepDelay time.Duration
	// TokenDelay is the pause between two streamed tokens. Zero means
	// DefaultTokenDelay; a negative value means no pause.
	TokenDelay time.Duration
}

func (c Config) step() time.Duration  { return orDefault(c.StepDelay, DefaultStepDelay) }
func (c Config) token() time.Duration { return orDefault(c.TokenDelay, DefaultTokenDelay) }

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// pause waits for d or until ctx ends, whichever comes first, and returns
// ctx's error in the second case, so that a cancelled task stops at its
// next step.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// stream reports text as tokens, one word (with the space or line break
// after it) at a time, so that the tokens concatenate to text exactly. At
// each line break it moves the progress bar linearly from one percentage
// towards another.
func stream(ctx context.Context, rep progress.Reporter, text string, delay time.Duration, from, to int) error {
	lines := strings.Count(text, "\n") + 1
	line := 0
	for tok := range tokens(text) {
		if err := pause(ctx, delay); err != nil {
			return err
		}
		rep.Token(tok)
		if strings.HasSuffix(tok, "\n") {
			line++
			rep.Progress(from+(to-from)*line/lines, "")
		}
	}
	rep.Progress(to, "")
	return nil
}

// tokens yields the chunks of text that end after each space or line
// break; the last chunk ends with the text.
func tokens(text string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for text != "" {
			i := strings.IndexAny(text, " \n")
			if i < 0 {
				yield(text)
				return
			}
			if !yield(text[:i+1]) {
				return
			}
			text = text[i+1:]
		}
	}
}
