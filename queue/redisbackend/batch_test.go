package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedBatcher returns a batcher whose batches record their items and
// wait for gate before answering each item with itself times ten.
func gatedBatcher(max, maxWeight int, gate chan struct{}) (*batcher[int, int], *[][]int, *sync.Mutex) {
	var mu sync.Mutex
	var batches [][]int
	b := &batcher[int, int]{
		max: max, maxWeight: maxWeight,
		weight: func(n int) int { return n },
		bound:  func(parent context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(parent) },
		run: func(_ context.Context, calls []*batchCall[int, int]) {
			items := make([]int, len(calls))
			for i, c := range calls {
				items[i] = c.item
			}
			mu.Lock()
			batches = append(batches, items)
			mu.Unlock()
			<-gate
			for _, c := range calls {
				if c.item < 0 {
					c.err = errors.New("negative")
				}
				c.res = c.item * 10
			}
		},
	}
	return b, &batches, &mu
}

// waiting returns how many calls wait for a batch.
func (b *batcher[T, R]) waitingCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// isRunning reports whether a batch is in flight or a loop still runs.
func (b *batcher[T, R]) isRunning() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

func TestBatcher(t *testing.T) {
	t.Run("a lone call runs at once", func(t *testing.T) {
		gate := make(chan struct{})
		close(gate)
		b, batches, _ := gatedBatcher(8, 100, gate)
		got, err := b.do(context.Background(), 4)
		require.NoError(t, err)
		assert.Equal(t, 40, got)
		_, err = b.do(context.Background(), -1)
		assert.EqualError(t, err, "negative", "each call gets its own error")
		assert.Equal(t, [][]int{{4}, {-1}}, *batches)
	})

	t.Run("calls made during a batch go together in the next, within the limits", func(t *testing.T) {
		gate := make(chan struct{})
		b, batches, mu := gatedBatcher(3, 10, gate)
		results := make(chan int, 8)
		call := func(n int) {
			got, err := b.do(context.Background(), n)
			assert.NoError(t, err)
			results <- got
		}
		go call(1)
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*batches) == 1 }, 5*time.Second, time.Millisecond)
		// The first batch is in flight: these wait for it, in this order.
		for i, n := range []int{2, 3, 4, 5, 9} {
			go call(n)
			require.Eventually(t, func() bool { return b.waitingCalls() == i+1 }, 5*time.Second, time.Millisecond)
		}
		close(gate)
		sum := 0
		for range 6 {
			sum += <-results
		}
		assert.Equal(t, 240, sum, "every call answered")
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, [][]int{{1}, {2, 3, 4}, {5}, {9}}, *batches,
			"at most 3 calls and a weight of 10 per batch, in order")
	})

	t.Run("a call whose context ends while it waits is left out", func(t *testing.T) {
		gate := make(chan struct{})
		b, batches, mu := gatedBatcher(8, 100, gate)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := b.do(context.Background(), 1)
			assert.NoError(t, err)
		}()
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*batches) == 1 }, 5*time.Second, time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := b.do(ctx, 2)
			errc <- err
		}()
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		cancel()
		assert.ErrorIs(t, <-errc, context.Canceled)
		close(gate)
		<-done
		got, err := b.do(context.Background(), 3)
		require.NoError(t, err)
		assert.Equal(t, 30, got)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, [][]int{{1}, {3}}, *batches, "the cancelled call never ran")
	})

	t.Run("a call with an ended context is not made", func(t *testing.T) {
		gate := make(chan struct{})
		close(gate)
		b, batches, _ := gatedBatcher(8, 100, gate)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := b.do(ctx, 1)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, *batches)
	})
}

// lingerByHand makes every linger end when the returned function is
// called (or never, if it is not), until the test ends; asked receives
// each linger's length.
func lingerByHand(t *testing.T) (end func(), asked chan time.Duration) {
	t.Helper()
	ended := make(chan time.Time)
	asked = make(chan time.Duration, 16)
	old := lingerTimer
	lingerTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		asked <- d
		return ended, func() bool { return true }
	}
	t.Cleanup(func() { lingerTimer = old })
	var once sync.Once
	return func() { once.Do(func() { close(ended) }) }, asked
}

// lingered returns the length of the next linger, failing the test if
// none begins in time.
func lingered(t *testing.T, asked <-chan time.Duration) time.Duration {
	t.Helper()
	select {
	case d := <-asked:
		return d
	case <-time.After(30 * time.Second):
		require.FailNow(t, "no call lingered")
		return 0
	}
}

// answered waits for n values from results, failing the test if they do
// not come in time.
func answered(t *testing.T, results <-chan int, n int) []int {
	t.Helper()
	var got []int
	for range n {
		select {
		case r := <-results:
			got = append(got, r)
		case <-time.After(30 * time.Second):
			require.FailNow(t, "calls not answered", "%d of %d", len(got), n)
		}
	}
	return got
}

func TestBatcherLinger(t *testing.T) {
	caller := func(t *testing.T, b *batcher[int, int], results chan<- int) func(ctx context.Context, n int) {
		return func(ctx context.Context, n int) {
			got, err := b.do(ctx, n)
			if err != nil {
				results <- -1
				assert.ErrorIs(t, err, context.Canceled)
				return
			}
			results <- got
		}
	}

	t.Run("calls made while one lingers share its batch", func(t *testing.T) {
		end, asked := lingerByHand(t)
		gate := make(chan struct{})
		close(gate)
		b, batches, _ := gatedBatcher(8, 100, gate)
		b.linger = time.Hour
		results := make(chan int, 8)
		call := caller(t, b, results)
		for i, n := range []int{1, 2, 3} {
			go call(context.Background(), n)
			require.Eventually(t, func() bool { return b.waitingCalls() == i+1 }, 5*time.Second, time.Millisecond)
		}
		assert.Equal(t, time.Hour, <-asked, "the first lingers, for the whole linger")
		assert.Empty(t, *batches, "nothing sent while it lingers")
		end()
		assert.ElementsMatch(t, []int{10, 20, 30}, answered(t, results, 3))
		assert.Equal(t, [][]int{{1, 2, 3}}, *batches, "one batch")
		assert.Empty(t, asked, "only the first call lingered")

		// A lone call lingers, then runs alone (the linger has ended
		// for good here).
		got, err := b.do(context.Background(), 4)
		require.NoError(t, err)
		assert.Equal(t, 40, got)
		assert.Equal(t, [][]int{{1, 2, 3}, {4}}, *batches)
		assert.Len(t, asked, 1)
	})

	t.Run("a full batch goes at once", func(t *testing.T) {
		lingerByHand(t) // never ends
		gate := make(chan struct{})
		close(gate)
		b, batches, _ := gatedBatcher(3, 10, gate)
		b.linger = time.Hour
		results := make(chan int, 8)
		call := caller(t, b, results)
		for _, n := range []int{1, 2, 3} {
			go call(context.Background(), n)
		}
		assert.ElementsMatch(t, []int{10, 20, 30}, answered(t, results, 3), "three calls fill a batch")
		for _, n := range []int{4, 6} {
			go call(context.Background(), n)
		}
		assert.ElementsMatch(t, []int{40, 60}, answered(t, results, 2), "a weight of 10 fills a batch")
		assert.Len(t, *batches, 2)
	})

	t.Run("a call whose context ends while it lingers is left out", func(t *testing.T) {
		end, _ := lingerByHand(t)
		gate := make(chan struct{})
		close(gate)
		b, batches, mu := gatedBatcher(8, 100, gate)
		b.linger = time.Hour
		results := make(chan int, 8)
		call := caller(t, b, results)

		// A call that joined the lingering one leaves.
		ctx2, cancel2 := context.WithCancel(context.Background())
		go call(context.Background(), 1)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		go call(ctx2, 2)
		require.Eventually(t, func() bool { return b.waitingCalls() == 2 }, 5*time.Second, time.Millisecond)
		cancel2()
		assert.Equal(t, []int{-1}, answered(t, results, 1))
		go call(context.Background(), 3)
		require.Eventually(t, func() bool { return b.waitingCalls() == 3 }, 5*time.Second, time.Millisecond)
		end()
		assert.ElementsMatch(t, []int{10, 30}, answered(t, results, 2))
		mu.Lock()
		assert.Equal(t, [][]int{{1, 3}}, *batches)
		mu.Unlock()
	})

	t.Run("the others go when the lingering call leaves", func(t *testing.T) {
		lingerByHand(t) // never ends
		gate := make(chan struct{})
		close(gate)
		b, batches, mu := gatedBatcher(8, 100, gate)
		b.linger = time.Hour
		results := make(chan int, 8)
		call := caller(t, b, results)
		ctx1, cancel1 := context.WithCancel(context.Background())
		go call(ctx1, 1)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		go call(context.Background(), 2)
		require.Eventually(t, func() bool { return b.waitingCalls() == 2 }, 5*time.Second, time.Millisecond)
		cancel1()
		assert.ElementsMatch(t, []int{-1, 20}, answered(t, results, 2))
		mu.Lock()
		assert.Equal(t, [][]int{{2}}, *batches, "the first never ran, the second did")
		mu.Unlock()

		// Alone, it leaves nothing behind: once the loop that ran the
		// second call has stopped, the next call lingers anew.
		require.Eventually(t, func() bool { return !b.isRunning() }, 5*time.Second, time.Millisecond)
		ctx3, cancel3 := context.WithCancel(context.Background())
		go call(ctx3, 3)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		cancel3()
		assert.Equal(t, []int{-1}, answered(t, results, 1))
		assert.Zero(t, b.waitingCalls())
		mu.Lock()
		assert.Equal(t, [][]int{{2}}, *batches)
		mu.Unlock()
	})

	t.Run("flush sends the lingering calls, and later ones do not linger", func(t *testing.T) {
		_, asked := lingerByHand(t) // never ends
		gate := make(chan struct{})
		close(gate)
		b, batches, _ := gatedBatcher(8, 100, gate)
		flush := make(chan struct{})
		b.linger, b.flush = time.Hour, flush
		results := make(chan int, 8)
		call := caller(t, b, results)
		go call(context.Background(), 1)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		go call(context.Background(), 2)
		require.Eventually(t, func() bool { return b.waitingCalls() == 2 }, 5*time.Second, time.Millisecond)
		close(flush)
		assert.ElementsMatch(t, []int{10, 20}, answered(t, results, 2))
		got, err := b.do(context.Background(), 3)
		require.NoError(t, err)
		assert.Equal(t, 30, got)
		assert.Equal(t, [][]int{{1, 2}, {3}}, *batches)
		assert.Len(t, asked, 1, "only the first lingered")
	})

	t.Run("calls made while a batch is in flight go together at once, without lingering", func(t *testing.T) {
		end, asked := lingerByHand(t)
		end()
		gate := make(chan struct{})
		b, batches, mu := gatedBatcher(8, 100, gate)
		b.linger = time.Hour
		results := make(chan int, 8)
		call := caller(t, b, results)
		go call(context.Background(), 1)
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*batches) == 1 }, 5*time.Second, time.Millisecond)
		for i, n := range []int{2, 3} {
			go call(context.Background(), n)
			require.Eventually(t, func() bool { return b.waitingCalls() == i+1 }, 5*time.Second, time.Millisecond)
		}
		close(gate)
		assert.ElementsMatch(t, []int{10, 20, 30}, answered(t, results, 3))
		mu.Lock()
		assert.Equal(t, [][]int{{1}, {2, 3}}, *batches)
		mu.Unlock()
		assert.Len(t, asked, 1, "only the first lingered")
	})

	// A call alone after a batch in flight: the first call, 100, fills
	// its batch alone and goes at once, gated; 2 comes while it is in
	// flight.
	afterFlight := func(t *testing.T, ctx2 context.Context, flush chan struct{}) (b *batcher[int, int], batches *[][]int, mu *sync.Mutex, call func(context.Context, int), results chan int, asked chan time.Duration, end func()) {
		t.Helper()
		end, asked = lingerByHand(t)
		gate := make(chan struct{})
		b, batches, mu = gatedBatcher(8, 100, gate)
		b.linger, b.flush = time.Hour, flush
		results = make(chan int, 8)
		call = caller(t, b, results)
		go call(context.Background(), 100)
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*batches) == 1 }, 5*time.Second, time.Millisecond)
		assert.Equal(t, time.Hour, lingered(t, asked), "the first")
		go call(ctx2, 2)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		close(gate)
		assert.Equal(t, []int{1000}, answered(t, results, 1))
		return b, batches, mu, call, results, asked, end
	}

	t.Run("a call alone after a batch in flight lingers as a first call does", func(t *testing.T) {
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
		defer cancel2()
		b, batches, mu, call, results, asked, end := afterFlight(t, ctx2, nil)
		d := lingered(t, asked)
		assert.Positive(t, d)
		assert.LessOrEqual(t, d, 30*time.Second, "half its caller's time at most")
		go call(context.Background(), 3)
		require.Eventually(t, func() bool { return b.waitingCalls() == 2 }, 5*time.Second, time.Millisecond)
		mu.Lock()
		assert.Equal(t, [][]int{{100}}, *batches, "nothing sent while it lingers")
		mu.Unlock()
		end()
		assert.ElementsMatch(t, []int{20, 30}, answered(t, results, 2))
		mu.Lock()
		assert.Equal(t, [][]int{{100}, {2, 3}}, *batches, "the call that came later shares its batch")
		mu.Unlock()
	})

	t.Run("a call alone after a batch in flight that leaves while it lingers lets the others go", func(t *testing.T) {
		ctx2, cancel2 := context.WithCancel(context.Background())
		b, batches, mu, call, results, asked, _ := afterFlight(t, ctx2, nil)
		lingered(t, asked) // never ends
		go call(context.Background(), 3)
		require.Eventually(t, func() bool { return b.waitingCalls() == 2 }, 5*time.Second, time.Millisecond)
		cancel2()
		assert.ElementsMatch(t, []int{-1, 30}, answered(t, results, 2))
		mu.Lock()
		assert.Equal(t, [][]int{{100}, {3}}, *batches)
		mu.Unlock()
		assert.Empty(t, asked, "the others did not linger again")
	})

	t.Run("a call alone after a batch in flight goes on flush, and a full batch goes at once", func(t *testing.T) {
		flushes := make(chan struct{})
		_, batches, mu, _, results, asked, _ := afterFlight(t, context.Background(), flushes)
		lingered(t, asked) // never ends
		close(flushes)
		assert.Equal(t, []int{20}, answered(t, results, 1))
		mu.Lock()
		assert.Equal(t, [][]int{{100}, {2}}, *batches)
		mu.Unlock()

		_, batches, mu, call, results, asked, _ := afterFlight(t, context.Background(), nil)
		lingered(t, asked) // never ends
		go call(context.Background(), 98)
		assert.ElementsMatch(t, []int{20, 980}, answered(t, results, 2), "a weight of 100 fills a batch")
		mu.Lock()
		assert.Equal(t, [][]int{{100}, {2, 98}}, *batches)
		mu.Unlock()
	})

	t.Run("without linger a call alone after a batch in flight goes at once", func(t *testing.T) {
		gate := make(chan struct{})
		b, batches, mu := gatedBatcher(8, 100, gate)
		results := make(chan int, 8)
		call := caller(t, b, results)
		go call(context.Background(), 1)
		require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*batches) == 1 }, 5*time.Second, time.Millisecond)
		go call(context.Background(), 2)
		require.Eventually(t, func() bool { return b.waitingCalls() == 1 }, 5*time.Second, time.Millisecond)
		close(gate)
		assert.ElementsMatch(t, []int{10, 20}, answered(t, results, 2))
		mu.Lock()
		assert.Equal(t, [][]int{{1}, {2}}, *batches)
		mu.Unlock()
	})

	t.Run("a caller with a deadline lingers half its time at most", func(t *testing.T) {
		end, asked := lingerByHand(t)
		end()
		gate := make(chan struct{})
		close(gate)
		b, _, _ := gatedBatcher(8, 100, gate)
		b.linger = time.Hour
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := b.do(ctx, 1)
		require.NoError(t, err)
		d := <-asked
		assert.Positive(t, d)
		assert.LessOrEqual(t, d, 30*time.Second)
	})
}

// itemError is the error the stress test's run gives some items: each
// caller must get its own.
type itemError int

func (e itemError) Error() string { return fmt.Sprintf("item %d failed", int(e)) }

// TestBatcherStress makes many calls at random moments, with random short
// contexts, through a lingering batcher whose batches take a random time,
// and flushes it at a random moment in some rounds. It checks what do
// promises: no call runs twice; a call answered without error was run,
// once, and got its own result or error; a call that got its context's
// error ran at most once (left out while it waited, or taken into a
// batch before it saw its context end), and one whose context had ended
// before the call never ran; no call is left waiting, and the batcher is
// idle and usable afterwards.
func TestBatcherStress(t *testing.T) {
	const rounds = 40
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	weigh := func(item int) int { return item%5 + 1 }
	for round := range rounds {
		var mu sync.Mutex
		runs := map[int]int{}
		var batchErrs []string
		var atBatchEnd sync.Map // item -> the cancel of its context
		maxCalls, maxWeight := 2+rng.IntN(7), 5+rng.IntN(20)
		flush := make(chan struct{})
		b := &batcher[int, int]{
			max: maxCalls, maxWeight: maxWeight, weight: weigh,
			linger: time.Duration(100+rng.IntN(2000)) * time.Microsecond,
			flush:  flush,
			bound:  func(parent context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(parent) },
		}
		b.run = func(_ context.Context, calls []*batchCall[int, int]) {
			mu.Lock()
			w := 0
			for _, c := range calls {
				runs[c.item]++
				w += weigh(c.item)
			}
			if len(calls) > 1 && (len(calls) > maxCalls || w > maxWeight) {
				batchErrs = append(batchErrs, fmt.Sprintf("batch of %d calls, weight %d, over %d, %d", len(calls), w, maxCalls, maxWeight))
			}
			d := time.Duration(rng.IntN(3000)) * time.Microsecond
			mu.Unlock()
			time.Sleep(d)
			for _, c := range calls {
				if c.item%7 == 0 && c.item%1000 != 999 { // the call after the others succeeds
					c.err = itemError(c.item)
					continue
				}
				c.res = c.item * 10
			}
			// The calls of kind 4 that wait end as this batch does: the
			// loop then may hand one the linger just as it sees its
			// context end.
			var ending []context.CancelFunc
			b.mu.Lock()
			for _, c := range b.waiting {
				if f, ok := atBatchEnd.LoadAndDelete(c.item); ok {
					ending = append(ending, f.(context.CancelFunc))
				}
			}
			b.mu.Unlock()
			for _, f := range ending {
				f()
			}
		}

		type outcome struct {
			item      int
			ctx       context.Context
			cancelled bool // its context had ended before the call
			res       int
			err       error
		}
		// Half the rounds are crowded, half sparse, so that calls are
		// often alone after a batch and are handed the linger.
		callers, spread := 64, 4000
		if round%4 >= 2 {
			callers, spread = 12, 15000
		}
		outcomes := make([]outcome, callers)
		plans := make([]struct {
			kind        int
			start, life time.Duration
		}, callers)
		mu.Lock()
		for i := range plans {
			plans[i].kind = rng.IntN(5)
			plans[i].start = time.Duration(rng.IntN(spread)) * time.Microsecond
			plans[i].life = time.Duration(rng.IntN(5000)) * time.Microsecond
		}
		closeAt := time.Duration(-1)
		if round%2 == 1 {
			closeAt = time.Duration(rng.IntN(6000)) * time.Microsecond
		}
		mu.Unlock()

		var wg sync.WaitGroup
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := plans[i]
				o := &outcomes[i]
				o.item = round*1000 + i + 1
				time.Sleep(p.start)
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch p.kind {
				case 1: // ended before the call
					ctx, cancel = context.WithCancel(ctx)
					cancel()
					o.cancelled = true
				case 2: // a deadline: the linger is capped by it
					ctx, cancel = context.WithTimeout(ctx, p.life)
				case 3: // cancelled before, during or after the linger
					ctx, cancel = context.WithCancel(ctx)
					timer := time.AfterFunc(p.life, cancel)
					defer timer.Stop()
				case 4: // cancelled as a batch ends while it waits
					ctx, cancel = context.WithCancel(ctx)
					atBatchEnd.Store(o.item, cancel)
				}
				defer cancel()
				o.ctx = ctx
				o.res, o.err = b.do(ctx, o.item)
			}()
		}
		if closeAt >= 0 {
			time.AfterFunc(closeAt, func() { close(flush) })
		}
		all := make(chan struct{})
		go func() { wg.Wait(); close(all) }()
		select {
		case <-all:
		case <-time.After(time.Minute):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			require.FailNow(t, "calls not answered", "round %d:\n%s", round, buf[:n])
		}

		// Batches of callers that left may still be running: wait for the
		// batcher to be idle, then it must serve a call.
		idle := func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return !b.running && len(b.waiting) == 0 && b.full == nil
		}
		if !assert.Eventually(t, idle, time.Minute, time.Millisecond, "round %d: batcher not idle", round) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Logf("%s", buf[:n])
			return
		}
		last := round*1000 + 999
		done := make(chan struct{})
		go func() {
			defer close(done)
			got, err := b.do(context.Background(), last)
			assert.NoError(t, err, "round %d: a call after the others", round)
			assert.Equal(t, last*10, got, "round %d: a call after the others", round)
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			require.FailNow(t, "a call after the others not answered", "round %d", round)
		}

		mu.Lock()
		assert.Empty(t, batchErrs, "round %d", round)
		for _, o := range outcomes {
			n := runs[o.item]
			delete(runs, o.item)
			switch {
			case o.err == nil:
				assert.Equal(t, o.item*10, o.res, "round %d: item %d answered with another's result", round, o.item)
				assert.Equal(t, 1, n, "round %d: item %d answered without error ran %d times", round, o.item, n)
			case errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded):
				assert.Error(t, o.ctx.Err(), "round %d: item %d got a context error before its context ended", round, o.item)
				assert.LessOrEqual(t, n, 1, "round %d: item %d left ran %d times", round, o.item, n)
				if o.cancelled {
					assert.Zero(t, n, "round %d: item %d ran though its context had ended before the call", round, o.item)
				}
			default:
				var ie itemError
				if assert.ErrorAs(t, o.err, &ie, "round %d: item %d", round, o.item) {
					assert.Equal(t, o.item, int(ie), "round %d: item %d answered with another's error", round, o.item)
				}
				assert.Equal(t, 1, n, "round %d: item %d answered with its error ran %d times", round, o.item, n)
			}
		}
		assert.Equal(t, 1, runs[last], "round %d: the call after the others", round)
		delete(runs, last)
		assert.Empty(t, runs, "round %d: items run that no call made", round)
		mu.Unlock()
		if t.Failed() {
			return
		}
	}
}
