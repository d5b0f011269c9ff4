package queue

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// handFetches is a Backend whose Fetch hands each call to the test (on
// asks) and returns what the test answers.
type handFetches struct {
	Backend // nil: only Fetch is called
	asks    chan fetchAsk
}

type fetchAsk struct {
	max    int
	answer chan []*Lease
}

func (b *handFetches) Fetch(ctx context.Context, _ string, max int, _ time.Duration) ([]*Lease, error) {
	a := fetchAsk{max: max, answer: make(chan []*Lease, 1)}
	select {
	case b.asks <- a:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case leases := <-a.answer:
		return leases, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestTasksRunOnTheRunnerBackLast: the fetch loop gives a task to the
// goroutine whose last task ended last, as the pool does with flows
// (see pool), so that a worker whose tasks come one at a time runs them
// all on one goroutine, whose stack has grown for the last and is still
// grown, rather than on each of the goroutines that ran tasks at once
// in turn, each shrunk by the GC while it waited.
func TestTasksRunOnTheRunnerBackLast(t *testing.T) {
	b := &handFetches{asks: make(chan fetchAsk)}
	w := NewWorker(b, progress.NewMemoryStore(progress.MemoryConfig{}), WorkerConfig{
		Concurrency: 2, Logger: slog.New(slog.DiscardHandler),
	})
	type run struct {
		g    int
		done chan struct{}
	}
	runs := make(chan run)
	ctx, cancel := context.WithCancel(context.Background())
	var inFlight sync.WaitGroup
	looped := make(chan struct{})
	go func() {
		defer close(looped)
		w.fetchLoop(ctx, &inFlight, func(leased) {
			r := run{g: goroutineID(), done: make(chan struct{})}
			runs <- r
			<-r.done
		})
	}()
	// untilFree answers the fetches with nothing until one asks for
	// every slot: every task's runner has given its slot back.
	untilFree := func() fetchAsk {
		t.Helper()
		for {
			a := <-b.asks
			if a.max == w.cfg.Concurrency {
				return a
			}
			a.answer <- nil
		}
	}

	// Two tasks at once: two runners. The first ends first.
	a := untilFree()
	a.answer <- []*Lease{{}, {}}
	first, second := <-runs, <-runs
	close(first.done)
	a = <-b.asks
	require.Equal(t, 1, a.max, "the first task's slot is free")
	a.answer <- nil
	close(second.done)

	// Then tasks one at a time: each runs on the runner back last.
	var ran []int
	for range 4 {
		a := untilFree()
		a.answer <- []*Lease{{}}
		r := <-runs
		ran = append(ran, r.g)
		close(r.done)
	}
	assert.Equal(t, []int{second.g, second.g, second.g, second.g}, ran,
		"runners %d (back first) and %d (back last)", first.g, second.g)

	a = untilFree()
	cancel()
	a.answer <- nil
	<-looped
	inFlight.Wait() // every runner has ended
}

// goroutineID returns the id of the calling goroutine, as its stack
// trace names it.
func goroutineID() int {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf, _ = bytes.CutPrefix(buf, []byte("goroutine "))
	id, err := strconv.Atoi(string(buf[:bytes.IndexByte(buf, ' ')]))
	if err != nil {
		panic(err)
	}
	return id
}
