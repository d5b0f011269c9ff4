package redisbackend_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// timedRegistry is a Backend whose heartbeats are timed: the time from
// the call to its return, of those that succeeded, and the count of
// those that failed.
type timedRegistry struct {
	*redisbackend.Backend
	mu      sync.Mutex
	replies []time.Duration
	failed  atomic.Int64
}

func (r *timedRegistry) Heartbeat(ctx context.Context, w queue.WorkerInfo) error {
	start := time.Now()
	err := r.Backend.Heartbeat(ctx, w)
	if err != nil {
		r.failed.Add(1)
		return err
	}
	r.mu.Lock()
	r.replies = append(r.replies, time.Since(start))
	r.mu.Unlock()
	return nil
}

// lapseCounter is a slog handler that counts the worker's lapses.
type lapseCounter struct {
	slog.Handler
	lapses atomic.Int64
}

func (h *lapseCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "in time; stopping the flows") {
		h.lapses.Add(1)
	}
	return nil
}

func (h *lapseCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lapseCounter) WithGroup(string) slog.Handler      { return h }

// TestHeartbeatsUnderCPULoad is a measurement, not a check, run only
// when FLOWS_HEARTBEAT_LOAD gives a number of flows: a worker with the
// default heartbeat runs that many flows that keep a CPU busy (they look
// at their context between slices of work) for FLOWS_HEARTBEAT_LOAD_FOR
// (20 s by default), and the test logs how long its heartbeats took to
// come back, how many came back later than an interval (a worker before
// 2026-12-07 gave up on those), how many failed, and how many times the
// worker lapsed. See BENCHMARKS.md, "heartbeats under CPU load".
func TestHeartbeatsUnderCPULoad(t *testing.T) {
	flows, _ := strconv.Atoi(os.Getenv("FLOWS_HEARTBEAT_LOAD"))
	if flows <= 0 {
		t.Skip("a measurement: set FLOWS_HEARTBEAT_LOAD to a number of CPU-bound flows")
	}
	run := 20 * time.Second
	if v := os.Getenv("FLOWS_HEARTBEAT_LOAD_FOR"); v != "" {
		var err error
		run, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	srv := redistest.Start(t)
	counter := &lapseCounter{Handler: slog.DiscardHandler}
	log := slog.New(counter)
	b := &timedRegistry{Backend: newBackend(t, newClient(t, srv), redisbackend.Config{Logger: log})}
	reg := registry.New()
	reg.MustRegister("busy", flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
		sum := 0
		for ctx.Err() == nil {
			for i := range 100_000 {
				sum += i
			}
		}
		return sum, nil
	}))
	w := queue.NewWorker(b, nil, queue.WorkerConfig{
		Registry: reg, Concurrency: flows, Lease: time.Minute, ShutdownGrace: time.Millisecond, Logger: log,
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	broker := queue.NewBroker(b.Backend, nil, queue.BrokerConfig{Registry: reg})
	for range flows {
		_, err := broker.Enqueue(context.Background(), "busy", nil, queue.EnqueueOptions{MaxAttempts: 100})
		require.NoError(t, err)
	}
	time.Sleep(run) // the measure's length, not a synchronisation
	stop()
	<-done

	b.mu.Lock()
	replies := slices.Sorted(slices.Values(b.replies))
	b.mu.Unlock()
	require.NotEmpty(t, replies, "no heartbeat succeeded")
	late := len(replies) - func() int {
		i, _ := slices.BinarySearch(replies, queue.DefaultHeartbeat)
		return i
	}()
	t.Logf("GOMAXPROCS %d, %d CPU-bound flows, %v: %d heartbeats came back (median %v, p90 %v, max %v), %d of them after more than an interval; %d failed; %d lapses",
		runtime.GOMAXPROCS(0), flows, run, len(replies), replies[len(replies)/2].Round(time.Millisecond),
		replies[len(replies)*9/10].Round(time.Millisecond), replies[len(replies)-1].Round(time.Millisecond),
		late, b.failed.Load(), counter.lapses.Load())
}
