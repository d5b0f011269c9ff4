package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// A Broker enqueues a task, a Worker runs its flow, and the progress
// store tells how it went. Everything here lives in memory; with Redis,
// the Broker and the Workers would run in different processes.
func Example() {
	type GreetInput struct {
		Name string `json:"name" desc:"who to greet"`
	}
	flows := registry.New()
	flows.MustRegister("greet", flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
		t.Progress.Log("greeting " + in.Name)
		return "hello, " + in.Name, nil
	}))

	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flows})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry: flows,
		Logger:   slog.New(slog.DiscardHandler),
	})

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(ctx) }()

	id, err := broker.Enqueue(context.Background(), "greet", json.RawMessage(`{"name":"Ada"}`), queue.EnqueueOptions{})
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	events, err := store.Subscribe(context.Background(), id, "")
	if err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	for e := range events { // closed after the terminal event
		switch {
		case e.Type == progress.EventStep:
			fmt.Println("log:", e.Step.Message)
		case e.Terminal():
			fmt.Println(e.State, string(e.Result))
		}
	}

	stop() // graceful: Run returns once in-flight flows are done
	fmt.Println("worker stopped:", <-stopped)
	// Output:
	// log: greeting Ada
	// SUCCESS "hello, Ada"
	// worker stopped: <nil>
}

// A task that fails for good is buried in the dead-letter set; once the
// cause is fixed, Requeue runs it again as a new task.
func ExampleBroker_Requeue() {
	var keyFixed atomic.Bool
	flows := registry.New()
	flows.MustRegister("search", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		if !keyFixed.Load() {
			return nil, flow.Permanent(errors.New("search API refused the key"))
		}
		return "42 results", nil
	}))
	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flows})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: flows, Logger: slog.New(slog.DiscardHandler)})
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(ctx) }()
	defer func() { stop(); <-stopped }()

	// follow prints the log steps and the end of a task, with the id of
	// the dead task (random) written <id>.
	var deadID string
	follow := func(id string) {
		events, err := store.Subscribe(context.Background(), id, "")
		if err != nil {
			fmt.Println("subscribe:", err)
			return
		}
		for e := range events {
			switch {
			case e.Type == progress.EventStep:
				msg := e.Step.Message
				if deadID != "" {
					msg = strings.ReplaceAll(msg, deadID, "<id>")
				}
				fmt.Println("log:", msg)
			case e.Terminal():
				end := string(e.State) + ": " + e.Status
				if e.Result != nil {
					end += " " + string(e.Result)
				}
				fmt.Println(end)
			}
		}
	}

	id, err := broker.Enqueue(context.Background(), "search", nil, queue.EnqueueOptions{})
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	follow(id)
	var dead []queue.DeadTask
	for len(dead) == 0 { // the worker buries the task right after its FAILURE
		time.Sleep(time.Millisecond)
		if dead, err = broker.Dead(context.Background(), 10); err != nil {
			fmt.Println("dead:", err)
			return
		}
	}
	fmt.Printf("dead: %s (%s) after %d attempt\n", dead[0].Flow, dead[0].Reason, dead[0].Attempts)

	keyFixed.Store(true)
	deadID = dead[0].ID
	again, err := broker.Requeue(context.Background(), deadID)
	if err != nil {
		fmt.Println("requeue:", err)
		return
	}
	follow(again)
	// Output:
	// FAILURE: search API refused the key
	// dead: search (search API refused the key) after 1 attempt
	// log: re-queued from task <id>
	// SUCCESS: Completed "42 results"
}

// A finish hook hears of every task that ends, on the worker that ends
// it: here it counts outcomes by flow and state. Hooks run at least once
// per task (again, after a worker's crash), so what they do must be
// idempotent: key it on the task id, as a map does here.
func ExampleWorkerConfig_onFinish() {
	flows := registry.New()
	flows.MustRegister("add", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) { return 3, nil }))

	var mu sync.Mutex
	outcomes := map[string]string{} // task id -> "flow STATE"
	ended := make(chan struct{}, 1)
	record := func(ctx context.Context, f queue.Finished) error {
		mu.Lock()
		defer mu.Unlock()
		outcomes[f.Task.ID] = f.Task.Flow + " " + string(f.Snapshot.State) + " " + string(f.Snapshot.Details.FinalResult)
		ended <- struct{}{}
		return nil
	}

	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flows})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry: flows,
		OnFinish: []queue.FinishHook{record},
		Logger:   slog.New(slog.DiscardHandler),
	})
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(ctx) }()
	defer func() { stop(); <-stopped }()

	id, err := broker.Enqueue(context.Background(), "add", nil, queue.EnqueueOptions{})
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	<-ended
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(outcomes[id])
	// Output:
	// add SUCCESS 3
}

// Wait blocks until a task ends and returns its final snapshot: a Go
// caller's answer to "tell me when it is done", without an event stream.
func ExampleBroker_Wait() {
	flows := registry.New()
	flows.MustRegister("double", flow.Typed(func(ctx context.Context, in struct{ N int }, t *flow.Task) (int, error) {
		return 2 * in.N, nil
	}))
	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: flows})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: flows, Logger: slog.New(slog.DiscardHandler)})
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(ctx) }()
	defer func() { stop(); <-stopped }()

	id, err := broker.Enqueue(context.Background(), "double", json.RawMessage(`{"N":21}`), queue.EnqueueOptions{})
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	waitCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := broker.Wait(waitCtx, id)
	if err != nil {
		fmt.Println("wait:", err)
		return
	}
	fmt.Println(info.Task.Flow, info.Snapshot.State, string(info.Snapshot.Details.FinalResult))
	// Output:
	// double SUCCESS 42
}

// A Broker checks what it is given against its registry: an unknown flow
// or inputs that fail the flow's schema are refused at once, with the
// errors the HTTP API answers with 404 and 422, and nothing is queued.
// EnqueueTyped takes a typed flow's inputs as its own Go type.
func ExampleEnqueueTyped() {
	type GreetInput struct {
		Name string `json:"name" desc:"who to greet"`
	}
	type Other struct {
		Name string `json:"name"`
	}
	flows := registry.New()
	flows.MustRegister("greet", flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
		return "hello, " + in.Name, nil
	}))
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}),
		queue.BrokerConfig{Registry: flows})
	ctx := context.Background()

	id, err := queue.EnqueueTyped(ctx, broker, "greet", GreetInput{Name: "Ada"}, queue.EnqueueOptions{})
	fmt.Println(queue.ValidID(id), err)

	_, err = queue.EnqueueTyped(ctx, broker, "greet", Other{Name: "Ada"}, queue.EnqueueOptions{})
	fmt.Println(errors.Is(err, flow.ErrInvalidInputs), err)

	_, err = broker.Enqueue(ctx, "greet", json.RawMessage(`{"nmae":"Ada"}`), queue.EnqueueOptions{})
	fmt.Println(errors.Is(err, flow.ErrInvalidInputs), err)

	_, err = broker.Enqueue(ctx, "gret", nil, queue.EnqueueOptions{})
	fmt.Println(errors.Is(err, registry.ErrUnknownFlow), err)
	// Output:
	// true <nil>
	// true invalid inputs: flow "greet" takes inputs of type queue_test.GreetInput, not queue_test.Other
	// true invalid inputs: field "nmae": is not a known input
	// true unknown flow: "gret"
}
