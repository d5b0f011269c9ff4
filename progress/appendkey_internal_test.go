package progress

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKeyedContext: the context a batch's first Append gets carries its
// key as WithAppendKey's does, and is its parent context for the rest.
func TestKeyedContext(t *testing.T) {
	type other struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), other{}, "value"))
	ctx := &keyedContext{Context: parent, key: "k.1"}
	assert.Equal(t, "k.1", AppendKey(ctx))
	assert.Equal(t, "value", ctx.Value(other{}), "other values come from the parent")
	assert.Equal(t, "k.2", AppendKey(WithAppendKey(ctx, "k.2")), "the innermost key wins")
	assert.Empty(t, AppendKey(context.Background()))

	child, stop := context.WithTimeout(ctx, time.Hour)
	defer stop()
	assert.Equal(t, "k.1", AppendKey(child), "derived contexts keep the key")
	cancel()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the parent's cancellation did not reach a context derived from the keyed one")
	}

	b := &batch{key: "p.1"}
	first, again := b.context(), b.context()
	assert.Equal(t, "p.1", AppendKey(first))
	assert.Equal(t, "p.1", AppendKey(again))
	assert.NotSame(t, first, again, "a resend gets a context of its own")
	assert.Equal(t, "", AppendKey((&batch{}).context()), "a batch without a key")
}
