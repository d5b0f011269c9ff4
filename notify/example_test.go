package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// A webhook about each finished task, and a receiver that verifies it.
func Example() {
	secret := notify.NewSecret() // shared with the receiver

	// The receiver's side: verify, then use the body.
	verifier, _ := notify.NewVerifier(secret)
	got := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := verifier.VerifyRequest(r, 0)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var event struct {
			Type string `json:"type"`
			Data struct {
				Flow     string            `json:"flow"`
				Owner    string            `json:"owner"` // whom to tell
				Snapshot progress.Snapshot `json:"snapshot"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &event)
		got <- fmt.Sprintf("%s %s for %s: %s", event.Type, event.Data.Flow, event.Data.Owner, event.Data.Snapshot.Details.FinalResult)
	}))
	defer receiver.Close()

	// The host's side: a queue, a webhook channel, the notifier.
	backend := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	reg := registry.New()
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
	hook, err := notify.NewWebhook(notify.WebhookConfig{
		URL:          receiver.URL,
		Secret:       secret,
		AllowPrivate: true, // the receiver of this example runs on loopback
	})
	if err != nil {
		panic(err)
	}
	notifier, err := notify.New(notify.Config{Queue: broker, Channels: []notify.Channel{hook}})
	if err != nil {
		panic(err)
	}
	if err := notifier.Register(reg); err != nil { // the delivery flow
		panic(err)
	}
	reg.MustRegister("greet", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		return "Hello, Ada!", nil
	}))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{
		Registry: reg,
		OnFinish: []queue.FinishHook{notifier.Hook()}, // a notification per finished task
		Logger:   slog.New(slog.DiscardHandler),
	})
	go worker.Run(ctx)

	// Owner is whom the task is for; over HTTP, ssehttp sets it to the
	// caller's Principal.ID.
	if _, err := broker.Enqueue(ctx, "greet", nil, queue.EnqueueOptions{Owner: "user:ada"}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: task.succeeded greet for user:ada: "Hello, Ada!"
}
