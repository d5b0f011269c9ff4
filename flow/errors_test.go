package flow_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/flow"
)

func TestPermanent(t *testing.T) {
	cause := &fs.PathError{Op: "open", Path: "prompt.txt", Err: fs.ErrNotExist}
	err := flow.Permanent(fmt.Errorf("load prompt: %w", cause))

	assert.ErrorIs(t, err, flow.ErrPermanent)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the wrapped cause is still found")
	var pe *fs.PathError
	if assert.ErrorAs(t, err, &pe) {
		assert.Equal(t, "prompt.txt", pe.Path)
	}
	assert.Equal(t, "load prompt: open prompt.txt: file does not exist", err.Error(), "the message is the cause's own")

	wrapped := fmt.Errorf("step 2: %w", err)
	assert.ErrorIs(t, wrapped, flow.ErrPermanent, "still permanent when wrapped again")
}

func TestPermanentNil(t *testing.T) {
	assert.NoError(t, flow.Permanent(nil))
}

func TestErrPermanentNotImplied(t *testing.T) {
	assert.NotErrorIs(t, errors.New("timeout talking to the model"), flow.ErrPermanent)
}

func TestRetryAfter(t *testing.T) {
	cause := errors.New("429 Too Many Requests")
	tests := []struct {
		name  string
		err   error
		want  time.Duration
		found bool
	}{
		{"plain error", cause, 0, false},
		{"nil", nil, 0, false},
		{"direct", flow.RetryAfter(cause, 3*time.Second), 3 * time.Second, true},
		{"wrapped again", fmt.Errorf("deliver: %w", flow.RetryAfter(cause, time.Minute)), time.Minute, true},
		{"negative is zero", flow.RetryAfter(cause, -time.Second), 0, true},
		{"inside a join", errors.Join(errors.New("other"), flow.RetryAfter(cause, 2*time.Second)), 2 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := flow.RetryDelay(tt.err)
			assert.Equal(t, tt.found, ok)
			assert.Equal(t, tt.want, d)
		})
	}
	err := flow.RetryAfter(cause, time.Second)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, cause.Error(), err.Error(), "the message is the cause's own")
	assert.NotErrorIs(t, err, flow.ErrPermanent)
	assert.ErrorIs(t, flow.Permanent(err), flow.ErrPermanent, "a permanent error stays permanent")
	assert.NoError(t, flow.RetryAfter(nil, time.Second))
}
