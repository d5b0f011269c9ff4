package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

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
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{})
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
