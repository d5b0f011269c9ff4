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
