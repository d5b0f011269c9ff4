package redisbackend_test

import (
	"context"
	"log"
	"os"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// A web process and its workers share one Redis: each builds a Backend on
// its own client and uses it both as the queue and as the progress store.
func ExampleNew() {
	opt, err := rueidis.ParseURL(os.Getenv("REDIS_URL")) // e.g. redis://127.0.0.1:6379/0
	if err != nil {
		log.Fatal(err)
	}
	opt.DisableCache = true // the backend reads nothing through the client-side cache
	client, err := rueidis.NewClient(opt)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	backend, err := redisbackend.New(client, redisbackend.Config{Queue: "default"})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close() // before the client: it stops the backend's pub/sub connection

	// The Broker accepts the flows of registry.Default, where the
	// program registered poem_flow (BrokerConfig.Registry names another).
	broker := queue.NewBroker(backend, backend, queue.BrokerConfig{})
	id, err := broker.Enqueue(context.Background(), "poem_flow", nil, queue.EnqueueOptions{})
	if err != nil {
		log.Fatal(err) // wraps queue.ErrUnavailable while Redis is down
	}
	log.Println("task", id)
}
