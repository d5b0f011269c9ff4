package opctx_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/opctx"
)

func TestSourceDeadlines(t *testing.T) {
	const limit, window = time.Hour, 50 * time.Millisecond
	s := opctx.New(context.Background(), limit, window)
	before := time.Now()
	a := s.Get()
	dl, ok := a.Deadline()
	require.True(t, ok)
	assert.False(t, dl.Before(before.Add(limit)), "ends at least the limit after the call")
	assert.False(t, dl.After(time.Now().Add(limit+window)), "at most the window later")
	assert.Same(t, a, s.Get(), "shared within the window")

	time.Sleep(2 * window)
	b := s.Get()
	assert.NotSame(t, a, b, "a new one past the window")
	dlb, _ := b.Deadline()
	assert.True(t, dlb.After(dl))
}

func TestSourceEnds(t *testing.T) {
	s := opctx.New(context.Background(), 20*time.Millisecond, time.Millisecond)
	ctx := s.Get()
	select {
	case <-ctx.Done():
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
	case <-time.After(5 * time.Second):
		t.Fatal("context did not end by its deadline")
	}

	parent, cancel := context.WithCancel(context.Background())
	s = opctx.New(parent, time.Hour, time.Hour)
	ctx = s.Get()
	cancel()
	<-ctx.Done()
	assert.ErrorIs(t, ctx.Err(), context.Canceled, "ends with its parent")
}

func TestSourceConcurrentGets(t *testing.T) {
	s := opctx.New(context.Background(), time.Hour, time.Hour)
	got := make([]context.Context, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = s.Get() })
	}
	wg.Wait()
	for _, ctx := range got {
		assert.Same(t, s.Get(), ctx, "all share one context")
		assert.NoError(t, ctx.Err())
	}
}

func TestSleep(t *testing.T) {
	assert.True(t, opctx.Sleep(context.Background(), time.Millisecond), "d passed")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, opctx.Sleep(ctx, time.Hour), "ctx ended first")
}
