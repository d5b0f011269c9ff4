package registry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/registry"
)

// A host registers its flows at start-up; the HTTP layer looks them up by
// the name a client sends.
func Example() {
	type PoemInput struct {
		Topic string `json:"topic" desc:"what the poem is about"`
	}
	poem := flow.Typed(func(ctx context.Context, in PoemInput, t *flow.Task) (string, error) {
		return "A poem about " + in.Topic, nil
	})

	flows := registry.New() // or registry.Default via registry.MustRegister
	flows.MustRegister("poem_flow", poem,
		registry.Description("Writes a short poem"),
		registry.Label("model", "offline"))

	entry, err := flows.Lookup("poem_flow")
	fmt.Println(entry.Name, err)

	_, err = flows.Lookup("sonnet_flow")
	fmt.Println(errors.Is(err, registry.ErrUnknownFlow))

	err = flows.Register("poem_flow", poem)
	fmt.Println(errors.Is(err, registry.ErrDuplicate))

	for _, info := range flows.List() {
		fmt.Println(info.Name, "-", info.Description, "- inputs:", info.Schema.Order, info.Labels)
	}
	// Output:
	// poem_flow <nil>
	// true
	// true
	// poem_flow - Writes a short poem - inputs: [topic] map[model:offline]
}

// A flow that calls a provider with a quota carries its own policy: at
// most 2 of its tasks run at once on all the workers of a queue, at most
// 60 start in any minute, and each run has 2 minutes. A value that cannot
// work is refused at registration.
func ExampleConcurrency() {
	summarize := flow.Func(func(ctx context.Context, t *flow.Task) (any, error) { return "summary", nil })

	flows := registry.New()
	err := flows.Register("summarize", summarize,
		registry.Concurrency(2),
		registry.Rate(60, time.Minute),
		registry.Timeout(2*time.Minute))
	fmt.Println(err)

	entry, _ := flows.Lookup("summarize")
	fmt.Println(entry.Policy.Concurrency, entry.Policy.Rate, entry.Policy.Per, entry.Policy.Timeout)

	err = flows.Register("translate", summarize, registry.Concurrency(0))
	fmt.Println(err)
	// Output:
	// <nil>
	// 2 60 1m0s 2m0s
	// registry: invalid flow: flow "translate": Concurrency 0 must be at least 1
}
