package redisbackend

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/rueidis"
)

// A batcher coalesces concurrent calls of one operation: calls made while
// a batch is in flight wait and go together in the next one, so that n
// callers cost Redis one script invocation and one round trip instead of
// n. This is where much of the Redis time per task is saved under load: a
// script's fixed cost, and the client's per-command work, are paid per
// batch.
//
// A call made while no batch is in flight runs at once, on its caller's
// goroutine, as a batch of one: a lone caller pays nothing for batching.
// When it is done and calls have queued meanwhile, one goroutine runs
// their batches until none is waiting.
type batcher[T, R any] struct {
	// max bounds the items of one batch; 1 turns batching off: each call
	// then runs at once on its caller's goroutine, concurrently with the
	// others.
	max int
	// weight, when set, is an item's share of maxWeight (the ARGV values
	// it adds to a script), which bounds a batch too.
	weight    func(T) int
	maxWeight int
	// run performs a batch, setting res or err of every call.
	run func(ctx context.Context, calls []*batchCall[T, R])
	// bound gives run its context from parent: each batch gets its own
	// time limit. A batch of queued calls runs under
	// context.Background(), whoever waits for it; a lone call under its
	// caller's context.
	bound func(parent context.Context) (context.Context, context.CancelFunc)

	mu      sync.Mutex
	waiting []*batchCall[T, R] // not empty only while running
	running bool
}

// batchCall is one call of a batch.
type batchCall[T, R any] struct {
	item T
	res  R
	err  error
	// gone is set (under the batcher's lock) when the caller stopped
	// waiting before its call was taken into a batch: it is then left out.
	gone bool
	done chan struct{}
}

// do runs item in a batch and returns its result. When ctx ends while the
// call waits for a batch, do returns ctx's error; the call is then left
// out of its batch unless the batch has already been sent, in which case
// it may or may not have taken effect, as with any request whose answer
// is not awaited.
func (b *batcher[T, R]) do(ctx context.Context, item T) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &batchCall[T, R]{item: item}
	if b.max <= 1 {
		// No batching: concurrent calls go their own ways.
		b.runBatch(ctx, []*batchCall[T, R]{c})
		return c.res, c.err
	}
	b.mu.Lock()
	if !b.running {
		b.running = true
		b.mu.Unlock()
		b.runBatch(ctx, []*batchCall[T, R]{c})
		b.mu.Lock()
		if len(b.waiting) > 0 {
			go b.loop()
		} else {
			b.running = false
		}
		b.mu.Unlock()
		return c.res, c.err
	}
	c.done = make(chan struct{})
	b.waiting = append(b.waiting, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		b.mu.Lock()
		c.gone = true
		b.mu.Unlock()
		return zero, ctx.Err()
	}
}

// runBatch runs one batch under a context bound from parent.
func (b *batcher[T, R]) runBatch(parent context.Context, calls []*batchCall[T, R]) {
	ctx, cancel := b.bound(parent)
	defer cancel()
	b.run(ctx, calls)
}

// loop runs batches until no call is waiting.
func (b *batcher[T, R]) loop() {
	for {
		calls := b.take()
		if calls == nil {
			return
		}
		b.runBatch(context.Background(), calls)
		for _, c := range calls {
			close(c.done)
		}
	}
}

// take removes the next batch from the waiting calls, or returns nil and
// ends the loop when there is none.
func (b *batcher[T, R]) take() []*batchCall[T, R] {
	b.mu.Lock()
	defer b.mu.Unlock()
	var calls []*batchCall[T, R]
	weight, n := 0, 0
	for _, c := range b.waiting {
		n++
		if c.gone {
			continue
		}
		w := 0
		if b.weight != nil {
			w = b.weight(c.item)
		}
		if len(calls) > 0 && (len(calls) >= b.max || weight+w > b.maxWeight) {
			n--
			break
		}
		calls = append(calls, c)
		weight += w
	}
	rest := copy(b.waiting, b.waiting[n:])
	clear(b.waiting[rest:])
	b.waiting = b.waiting[:rest]
	if len(calls) == 0 {
		b.running = false
		return nil
	}
	return calls
}

// batchArgs returns the script arguments of a batch: lead, then the
// arguments of each call (args gives them), in one allocation.
func batchArgs[T any](lead []string, calls []T, args func(T) []string) []string {
	n := len(lead)
	for _, c := range calls {
		n += len(args(c))
	}
	out := append(make([]string, 0, n), lead...)
	for _, c := range calls {
		out = append(out, args(c)...)
	}
	return out
}

// batchReplies returns the replies of a script that answers each of a
// batch's n calls with one value, or the error of the script itself.
func batchReplies(r rueidis.RedisResult, n int) ([]rueidis.RedisMessage, error) {
	replies, err := r.ToArray()
	if err == nil && len(replies) != n {
		err = fmt.Errorf("unexpected reply of %d values for %d calls", len(replies), n)
	}
	return replies, err
}
