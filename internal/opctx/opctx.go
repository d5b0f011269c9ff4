// Package opctx hands out contexts that bound an operation in time, one
// context (and one timer) shared by the operations that start within a
// short window, where context.WithTimeout per operation would make a
// context and a timer each time: on a worker's hot path, several per task.
package opctx

import (
	"context"
	"sync/atomic"
	"time"
)

// Source hands out contexts that end between Limit and Limit + Window
// after the call that got them, and never earlier than their parent.
type Source struct {
	parent        context.Context
	limit, window time.Duration
	cur           atomic.Pointer[shared]
}

type shared struct {
	ctx    context.Context
	cancel context.CancelFunc // kept, not called: the context ends by its deadline
	until  time.Time          // handed out until then
}

// New returns a Source of contexts derived from parent that end between
// limit and limit + window after they are handed out.
func New(parent context.Context, limit, window time.Duration) *Source {
	return &Source{parent: parent, limit: limit, window: window}
}

// Get returns a context that ends at least the Source's limit from now,
// at most its window later. It is shared: it has no cancel function of
// its own, and ends by its deadline or with its parent.
func (s *Source) Get() context.Context {
	now := time.Now()
	cur := s.cur.Load()
	if cur != nil && now.Before(cur.until) {
		return cur.ctx
	}
	ctx, cancel := context.WithDeadline(s.parent, now.Add(s.limit+s.window))
	next := &shared{ctx: ctx, cancel: cancel, until: now.Add(s.window)}
	if s.cur.CompareAndSwap(cur, next) {
		return ctx
	}
	// Another call made one meanwhile: use it.
	cancel()
	return s.cur.Load().ctx
}

// Sleep waits for d or until ctx ends, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
