package redisbackend

import (
	"context"
	"errors"
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

		// Alone, it leaves nothing behind: the next call lingers anew.
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
