package redisbackend

import (
	"context"
	"fmt"
	"sync"
	"time"

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
//
// With linger set, a call made while no batch is in flight does not run
// at once: it waits up to linger for others to join it (as Nagle's
// algorithm, or a Kafka producer's linger.ms), so that calls that arrive
// a little apart share a batch too. The batch is sent when the linger
// has passed, at once when it is full (max calls or maxWeight), and when
// flush is closed; a call whose context ends while it lingers is left
// out, and the others go without it. Calls made while a batch is in
// flight go in the next batch as soon as it is done, as without linger,
// so that a busy batcher waits for nothing more; but when that batch
// would hold a single call, the call lingers as a first call does (it
// would otherwise go alone, and at low rates such stragglers of a batch
// are each a round trip of their own). The bound is the first call's
// rule, a call that would go alone: two calls already share a round
// trip, and at full load many calls gather during a flight, so the rule
// does not apply there.
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
	// linger is how long a call that would run alone waits for others;
	// zero runs it at once. A caller whose context has a deadline
	// lingers half the time left at most.
	linger time.Duration
	// flush, when closed, ends every linger at once (the backend's
	// Close), and makes later calls run without one.
	flush <-chan struct{}

	mu      sync.Mutex
	waiting []*batchCall[T, R] // not empty only while running
	running bool
	// full is closed when the calls that linger make a full batch; set
	// only while a call lingers. lingerN and lingerW are their number
	// and weight (calls that left included).
	full             chan struct{}
	lingerN, lingerW int
}

// lingerTimer returns a channel that delivers when d has passed, and a
// function that stops it; tests replace it.
var lingerTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// batchCall is one call of a batch.
type batchCall[T, R any] struct {
	item T
	res  R
	err  error
	// gone is set (under the batcher's lock) when the caller stopped
	// waiting before its call was taken into a batch: it is then left out.
	gone bool
	// lead is set (under the batcher's lock) when the call, alone after
	// a batch, is handed the linger: done is closed, and the caller then
	// lingers as a first call does; lead is closed when the batch fills.
	lead chan struct{}
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
	if !b.running && b.linger > 0 && !b.flushed() {
		return b.lead(ctx, c)
	}
	if !b.running {
		b.running = true
		return b.runAlone(ctx, c)
	}
	c.done = make(chan struct{})
	b.waiting = append(b.waiting, c)
	if b.full != nil {
		// A call lingers: this one joins it, and the batch goes at once
		// when it is full.
		b.lingerN++
		b.lingerW += b.weigh(item)
		if b.lingerN >= b.max || b.lingerW >= b.maxWeight {
			close(b.full)
			b.full = nil
		}
	}
	b.mu.Unlock()
	return b.await(ctx, c)
}

// await waits for c's batch to answer it, or for ctx to end, which leaves
// c out of its batch unless the batch has been taken.
func (b *batcher[T, R]) await(ctx context.Context, c *batchCall[T, R]) (R, error) {
	select {
	case <-c.done:
		if c.lead != nil {
			return b.relead(ctx, c)
		}
		return c.res, c.err
	case <-ctx.Done():
		b.mu.Lock()
		if c.lead != nil {
			// Handed the linger meanwhile: it must be let go of.
			b.mu.Unlock()
			return b.relead(ctx, c)
		}
		c.gone = true
		b.mu.Unlock()
		var zero R
		return zero, ctx.Err()
	}
}

// relead is await for a call that the loop handed the linger (see
// handOver): it lingers as a first call does.
func (b *batcher[T, R]) relead(ctx context.Context, c *batchCall[T, R]) (R, error) {
	b.mu.Lock()
	full := c.lead
	c.lead = nil
	c.done = make(chan struct{})
	b.mu.Unlock()
	return b.lingerLead(ctx, c, full)
}

// lead is do for a call made while no batch is in flight, with linger
// set; b.mu is held and is released. The call waits up to linger for
// others to join it (see batcher). If none has, it runs alone on its
// caller's goroutine under its context, as without linger; otherwise
// the loop runs the batch, and the call waits for its answer as a call
// made during a batch does.
func (b *batcher[T, R]) lead(ctx context.Context, c *batchCall[T, R]) (R, error) {
	b.running = true
	c.done = make(chan struct{})
	b.waiting = append(b.waiting, c)
	full := make(chan struct{})
	b.full, b.lingerN, b.lingerW = full, 1, b.weigh(c.item)
	if b.lingerN >= b.max || b.lingerW >= b.maxWeight {
		// Full alone: no call joins it.
		close(full)
		b.full = nil
	}
	b.mu.Unlock()
	return b.lingerLead(ctx, c, full)
}

// lingerLead is lead once the linger is set up: c, its caller's call, is
// b.waiting[0], and full is closed when the batch fills.
func (b *batcher[T, R]) lingerLead(ctx context.Context, c *batchCall[T, R], full chan struct{}) (R, error) {
	wait := b.linger
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)/2)
	}
	timer, stop := lingerTimer(wait)
	select {
	case <-timer:
	case <-full:
	case <-b.flush:
	case <-ctx.Done():
	}
	stop()

	b.mu.Lock()
	if b.full == full {
		b.full = nil
	}
	if ctx.Err() != nil {
		// Left out; the others, if any, go now.
		c.gone = true
		if len(b.waiting) > 1 {
			go b.loop(true)
		} else {
			clear(b.waiting)
			b.waiting = b.waiting[:0]
			b.running = false
		}
		b.mu.Unlock()
		var zero R
		return zero, ctx.Err()
	}
	alone := true
	for _, o := range b.waiting[1:] {
		alone = alone && o.gone
	}
	if !alone {
		b.mu.Unlock()
		go b.loop(true)
		return b.await(ctx, c)
	}
	clear(b.waiting)
	b.waiting = b.waiting[:0]
	return b.runAlone(ctx, c)
}

// runAlone runs c as a batch of one on its caller's goroutine; b.mu is
// held and b.running set. When calls queued meanwhile, a loop takes them
// over; otherwise the batcher stops running.
func (b *batcher[T, R]) runAlone(ctx context.Context, c *batchCall[T, R]) (R, error) {
	b.mu.Unlock()
	b.runBatch(ctx, []*batchCall[T, R]{c})
	b.mu.Lock()
	if len(b.waiting) > 0 {
		go b.loop(false)
	} else {
		b.running = false
	}
	b.mu.Unlock()
	return c.res, c.err
}

// weigh returns item's weight, 0 without a weight function.
func (b *batcher[T, R]) weigh(item T) int {
	if b.weight == nil {
		return 0
	}
	return b.weight(item)
}

// flushed reports whether flush is closed.
func (b *batcher[T, R]) flushed() bool {
	select {
	case <-b.flush:
		return true
	default:
		return false
	}
}

// runBatch runs one batch under a context bound from parent.
func (b *batcher[T, R]) runBatch(parent context.Context, calls []*batchCall[T, R]) {
	ctx, cancel := b.bound(parent)
	defer cancel()
	b.run(ctx, calls)
}

// loop runs batches until no call is waiting, or until a single call is
// waiting and lingers (see handOver). lingered says that the calls
// waiting have just lingered: their first batch then goes at once.
func (b *batcher[T, R]) loop(lingered bool) {
	for {
		calls := b.take(!lingered)
		if calls == nil {
			return
		}
		lingered = false
		b.runBatch(context.Background(), calls)
		for _, c := range calls {
			close(c.done)
		}
	}
}

// take removes the next batch from the waiting calls, or returns nil and
// ends the loop when there is none, or when mayLinger is set and the
// batch would be a single call, which it hands the linger (handOver).
func (b *batcher[T, R]) take(mayLinger bool) []*batchCall[T, R] {
	b.mu.Lock()
	defer b.mu.Unlock()
	if mayLinger && b.linger > 0 && b.handOver() {
		return nil
	}
	var calls []*batchCall[T, R]
	weight, n := 0, 0
	for _, c := range b.waiting {
		n++
		if c.gone {
			continue
		}
		w := b.weigh(c.item)
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

// handOver makes the one call left waiting after a batch linger as a
// first call does, and reports whether it did; b.mu is held. The call's
// caller lingers (await, relead) while the batcher stays running, so
// that calls made meanwhile join it, as they join a first call. Calls
// that left are dropped; with more than one call waiting, or once flush
// is closed, nothing is done.
func (b *batcher[T, R]) handOver() bool {
	var c *batchCall[T, R]
	for _, o := range b.waiting {
		if o.gone {
			continue
		}
		if c != nil {
			return false
		}
		c = o
	}
	if c == nil || b.flushed() || 1 >= b.max || b.weigh(c.item) >= b.maxWeight {
		return false
	}
	clear(b.waiting)
	b.waiting = append(b.waiting[:0], c)
	b.full, b.lingerN, b.lingerW = make(chan struct{}), 1, b.weigh(c.item)
	c.lead = b.full
	close(c.done)
	return true
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
