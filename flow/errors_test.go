package flow_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

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
