package redisbackend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// Benchmarks run against a local redis-server, so their figures are
// mostly round trips to it: compare them with each other, not with a
// network deployment.

func BenchmarkEnqueue(b *testing.B) {
	srv := redistest.Start(b)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(b, srv)}
	backend := newBackend(b, counter, redisbackend.Config{})
	ctx := context.Background()

	b.Run("Backend", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := backend.Enqueue(ctx, newTask()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Broker", func(b *testing.B) {
		// What start-task costs: the progress record, then the task.
		broker := queue.NewBroker(backend, backend, queue.BrokerConfig{Registry: flowsNamed("f")})
		inputs := json.RawMessage(`{"question":"why is the sky blue?"}`)
		b.ReportAllocs()
		before := counter.Trips()
		for b.Loop() {
			if _, err := broker.Enqueue(ctx, "f", inputs, queue.EnqueueOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(counter.Trips()-before)/float64(b.N), "trips/op")
	})
	b.Run("BrokerCallerLimits", func(b *testing.B) {
		// The same with a start rate and a waiting cap checked in the
		// create script, set high enough that nothing is refused.
		broker := queue.NewBroker(backend, backend, queue.BrokerConfig{Registry: flowsNamed("f"),
			CallerLimits: queue.CallerLimits{Starts: 1 << 30, Per: time.Second, MaxPending: 1 << 30}})
		inputs := json.RawMessage(`{"question":"why is the sky blue?"}`)
		b.ReportAllocs()
		before := counter.Trips()
		for b.Loop() {
			if _, err := broker.Enqueue(ctx, "f", inputs, queue.EnqueueOptions{Caller: "alice"}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(counter.Trips()-before)/float64(b.N), "trips/op")
	})
}

func BenchmarkAppend(b *testing.B) {
	srv := redistest.Start(b)
	backend := newBackend(b, newClient(b, srv), redisbackend.Config{})
	ctx := context.Background()

	for _, subscribers := range []int{0, 1, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subscribers), func(b *testing.B) {
			id := queue.NewID()
			require.NoError(b, backend.Create(ctx, id))
			subCtx, cancel := context.WithCancel(ctx)
			var drained sync.WaitGroup
			for range subscribers {
				ch, err := backend.Subscribe(subCtx, id, "")
				require.NoError(b, err)
				drained.Go(func() {
					for range ch {
					}
				})
			}
			e := progress.Event{Type: progress.EventToken, Token: "a token of some twenty bytes"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := backend.Append(ctx, id, e); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cancel()
			drained.Wait()
		})
	}
}

// BenchmarkLifecycle takes a task through what a worker does with it:
// enqueue, fetch, start, five log events, success, ack.
func BenchmarkLifecycle(b *testing.B) {
	srv := redistest.Start(b)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(b, srv)}
	backend := newBackend(b, counter, redisbackend.Config{})
	broker := queue.NewBroker(backend, backend, queue.BrokerConfig{Registry: flowsNamed("poem")})
	ctx := context.Background()
	inputs := json.RawMessage(`{"topic":"roses"}`)
	result := json.RawMessage(`{"poem":"roses are red"}`)

	b.ReportAllocs()
	before := counter.Trips()
	for b.Loop() {
		id, err := broker.Enqueue(ctx, "poem", inputs, queue.EnqueueOptions{})
		if err != nil {
			b.Fatal(err)
		}
		leases, err := backend.Fetch(ctx, "bench", 1, time.Minute)
		if err != nil || len(leases) != 1 || leases[0].Task.ID != id {
			b.Fatalf("fetch: %v (%d leases)", err, len(leases))
		}
		rep := progress.NewTaskReporter(backend, id, nil)
		if err := rep.Start(ctx, "Running"); err != nil {
			b.Fatal(err)
		}
		for i := range 5 {
			rep.Log(fmt.Sprintf("step %d", i))
		}
		if err := rep.Succeed(ctx, result); err != nil {
			b.Fatal(err)
		}
		if err := backend.Ack(ctx, leases[0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(counter.Trips()-before)/float64(b.N), "trips/op")
}

// BenchmarkConcurrent runs the batched operations from 64 goroutines at
// once, as a busy worker and web process do: each operation waits for the
// batch in flight and then goes with the others in one script call.
// trips/op is the round trips per operation.
func BenchmarkConcurrent(b *testing.B) {
	srv := redistest.Start(b)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(b, srv)}
	backend := newBackend(b, counter, redisbackend.Config{})
	broker := queue.NewBroker(backend, backend, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx := context.Background()
	inputs := json.RawMessage(`{"question":"why is the sky blue?"}`)

	run := func(b *testing.B, op func() error) {
		b.SetParallelism(32) // 64 goroutines on 2 CPUs
		b.ReportAllocs()
		before := counter.Trips()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(counter.Trips()-before)/float64(b.N), "trips/op")
	}
	b.Run("Enqueue", func(b *testing.B) {
		run(b, func() error {
			_, err := broker.Enqueue(ctx, "f", inputs, queue.EnqueueOptions{})
			return err
		})
	})
	b.Run("Append", func(b *testing.B) {
		var next atomic.Int64
		ids := make([]string, 64)
		for i := range ids {
			ids[i] = queue.NewID()
			require.NoError(b, backend.Create(ctx, ids[i]))
		}
		e := progress.Event{Type: progress.EventToken, Token: "a token of some twenty bytes"}
		run(b, func() error {
			_, err := backend.Append(ctx, ids[next.Add(1)%int64(len(ids))], e)
			return err
		})
	})
}

// BenchmarkSweep runs heartbeats that sweep for entries pending with no
// lease (see lua/lib/stray.lua) while a worker holds many leases, all
// pending for longer than the sweeping worker's lease, and none stray:
// the common case, which the sweep settles by counting (a sweep that
// read the pending list and the leases set paid for both). redis-µs/op
// is the time Redis spent in the heartbeat script, by its own count
// (INFO commandstats).
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			srv := redistest.Start(b)
			backend := newBackend(b, newClient(b, srv), redisbackend.Config{})
			redisbackend.SetSweepEvery(backend, time.Nanosecond)
			ctx := context.Background()
			for range n {
				require.NoError(b, backend.Enqueue(ctx, newTask()))
			}
			for held := 0; held < n; {
				leases, err := backend.Fetch(ctx, "w", n-held, time.Hour)
				require.NoError(b, err)
				held += len(leases)
			}
			w := queue.WorkerInfo{Name: "w", Heartbeat: time.Hour, Lease: time.Millisecond}
			swept := backend.Prefix() + ":{q:default}:workers:swept"
			time.Sleep(2 * time.Millisecond) // every entry pending for longer than the lease
			require.NoError(b, srv.Do("CONFIG", "RESETSTAT").Error())
			for b.Loop() {
				require.NoError(b, srv.Do("DEL", swept).Error())
				require.NoError(b, backend.Heartbeat(ctx, w))
			}
			b.ReportMetric(evalshaStat(b, srv, "usec")/float64(b.N), "redis-µs/op")
		})
	}
}

// evalshaStat returns field of srv's statistics of EVALSHA since they
// were reset, from INFO commandstats: "usec" for the microseconds Redis
// has spent in scripts, "usec_per_call" for those per call; 0 when no
// script has run.
func evalshaStat(t testing.TB, srv *redistest.Server, field string) float64 {
	t.Helper()
	return commandStats(t, srv, field)["evalsha"]
}
