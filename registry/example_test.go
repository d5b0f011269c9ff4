package registry_test

import (
	"context"
	"errors"
	"fmt"

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
