package redisbackend_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// debugTrips has firstCommands show each round trip whole (its commands
// cut at 120 bytes).
var debugTrips = false

// firstCommands returns the name of the first command of each of trips
// (see redistrips.Client.Naming).
func firstCommands(trips [][]string) []string {
	out := make([]string, len(trips))
	for i, trip := range trips {
		out[i], _, _ = strings.Cut(trip[0], " ")
		if debugTrips {
			short := make([]string, len(trip))
			for k, c := range trip {
				short[k] = c[:min(len(c), 120)]
			}
			out[i] = strings.Join(short, " | ")
		}
	}
	return out
}

// TestTaskRoundTrips counts the round trips one task costs through a
// Broker and a Worker, apart from the Fetch that leases it (one script
// for up to 128 tasks, which names no task): those whose commands name
// the task. The one-step path is taken when the store is the backend (nil,
// or the backend itself); a store that wraps the backend costs a round
// trip more for Enqueue and for the task's end (Append, then Ack), and
// its flow waits for its start to be recorded before it runs. Finish
// hooks, however many, cost two round trips more per task: the success
// and its acknowledgement go apart, and the final snapshot is read for
// the hooks.
func TestTaskRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)

	nilStore := func(*redisbackend.Backend) progress.Store { return nil }
	hook := func(context.Context, queue.Finished) error { return nil }
	tests := []struct {
		name          string
		store         func(b *redisbackend.Backend) progress.Store
		hooks         []queue.FinishHook
		enqueue, work int
	}{
		// The start, then the success and the acknowledgement in one.
		{"nil store: the backend is the store", nilStore, nil, 1, 2},
		{"the backend passed as the store", func(b *redisbackend.Backend) progress.Store { return b }, nil, 1, 2},
		// The start, the success, the acknowledgement.
		{"a store wrapping the backend", func(b *redisbackend.Backend) progress.Store { return progressOnly{b} }, nil, 2, 3},
		// The start, the success, the snapshot for the hooks, the
		// acknowledgement.
		{"nil store and a finish hook", nilStore, []queue.FinishHook{hook}, 1, 4},
		{"nil store and three finish hooks", nilStore, []queue.FinishHook{hook, hook, hook}, 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The Broker and the Worker each on a client of its own, as in
			// a deployment, so that the round trips of each are told apart.
			webClient := &redistrips.Client{Client: newClient(t, srv), Record: true}
			workerClient := &redistrips.Client{Client: newClient(t, srv), Record: true}
			web := newBackend(t, webClient, redisbackend.Config{})
			cfg := redisbackend.Config{Prefix: web.Prefix()}
			workerSide := newBackend(t, workerClient, cfg)
			observer := newBackend(t, newClient(t, srv), cfg)
			// The flow returns once its start is recorded: on the one-step
			// path the start goes in the background and, with a flow that
			// returns at once, goes with its end or not depending on
			// timing; this way it always goes alone.
			reg := registry.New()
			reg.MustRegister("quick", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
				for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if snap, _, err := observer.Snapshot(ctx, task.ID); err == nil && snap.State == progress.StateProgress {
						return "ok", nil
					}
				}
				return nil, flow.Permanent(errors.New("the start was not recorded"))
			}))
			broker := queue.NewBroker(web, tt.store(web), queue.BrokerConfig{Registry: reg, Logger: quiet})
			startWorker(t, queue.NewWorker(workerSide, tt.store(workerSide), queue.WorkerConfig{
				Registry: reg, Concurrency: 1, Logger: quiet, OnFinish: tt.hooks,
			}))

			run := func() (enqueue, work []string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				webMark, workerMark := webClient.Trips(), workerClient.Trips()
				id, err := broker.Enqueue(ctx, "quick", nil, queue.EnqueueOptions{})
				require.NoError(t, err)
				eventually(t, func() bool {
					snap, _, err := observer.Snapshot(ctx, id)
					leased, lerr := srv.Do("ZCARD", web.Prefix()+":{q:"+web.Queue()+"}:leased").AsInt64()
					return err == nil && snap.State == progress.StateSuccess && lerr == nil && leased == 0
				}, "the task did not succeed and get acknowledged")
				return firstCommands(webClient.Naming(webMark, id)), firstCommands(workerClient.Naming(workerMark, id))
			}
			run() // loads the scripts, so that no NOSCRIPT retry is counted
			enqueue, work := run()
			t.Logf("Enqueue: %q; worker: %q", enqueue, work)
			assert.Len(t, enqueue, tt.enqueue, "round trips of Enqueue: %q", enqueue)
			assert.Len(t, work, tt.work, "round trips of the worker for the task: %q", work)
		})
	}
}

// startWorker runs w until the test ends.
func startWorker(t *testing.T, w *queue.Worker) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			assert.NoError(t, err, "Worker.Run")
		case <-time.After(waitLimit):
			t.Error("Worker.Run did not return")
		}
	})
}

// TestOneStepChoiceIsLogged: a Broker or Worker given a store other than
// the backend, while the backend offers the one-step path, says so once,
// with the cost and the remedy; one given a nil store, or the backend
// itself, says nothing.
func TestOneStepChoiceIsLogged(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	tests := []struct {
		name  string
		store progress.Store
		warns bool
	}{
		{"nil store", nil, false},
		{"the backend itself", b, false},
		{"a store wrapping the backend", progressOnly{b}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			queue.NewBroker(b, tt.store, queue.BrokerConfig{Logger: logger})
			queue.NewWorker(b, tt.store, queue.WorkerConfig{Logger: logger})
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if !tt.warns {
				assert.Empty(t, logs.String())
				return
			}
			require.Len(t, lines, 3, "one warning from each constructor, and the worker's about checkpoints: %s", logs.String())
			assert.Contains(t, lines[2], "level=WARN")
			assert.Contains(t, lines[2], "durable steps are off", "a wrapper hides the backend's checkpoints")
			assert.Contains(t, lines[2], "WorkerConfig.Checkpoints", "the remedy")
			for i, caller := range []string{"NewBroker", "NewWorker"} {
				assert.Contains(t, lines[i], "level=WARN")
				assert.Contains(t, lines[i], "caller="+caller)
				assert.Contains(t, lines[i], "one more round trip", "the cost")
				assert.Contains(t, lines[i], "nil store", "the remedy")
				assert.Contains(t, lines[i], "finish hooks (WorkerConfig.OnFinish)", "the remedy for observers")
			}
			assert.Contains(t, lines[0], "slower=[Enqueue]")
			assert.Contains(t, lines[1], `slower="[the start of a task the end of a task]"`)
		})
	}
	t.Run("a wrapping store with the checkpoints given", func(t *testing.T) {
		var logs bytes.Buffer
		queue.NewWorker(b, progressOnly{b}, queue.WorkerConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Checkpoints: b})
		assert.NotContains(t, logs.String(), "checkpoints")
		assert.Contains(t, logs.String(), "one more round trip", "the one-step warning alone")
	})
}
