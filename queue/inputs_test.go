package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// flowsNamed returns a registry of flows, under names, that accept any
// inputs and do nothing.
func flowsNamed(names ...string) *registry.Registry {
	reg := registry.New()
	for _, name := range names {
		reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	}
	return reg
}

type greetInput struct {
	Name  string `json:"name"`
	Times int    `json:"times,omitempty"`
}

// Validate refuses a negative count, beyond what the schema says.
func (g greetInput) Validate() error {
	if g.Times < 0 {
		return errors.New("times must not be negative")
	}
	return nil
}

type otherInput struct {
	Name string `json:"name"`
}

// checkedFlows returns a registry with a typed flow "greet", a plain flow
// "plain" and an internal flow "internal".
func checkedFlows() *registry.Registry {
	reg := registry.New()
	reg.MustRegister("greet", flow.Typed(func(_ context.Context, in greetInput, _ *flow.Task) (string, error) {
		return "hello " + in.Name, nil
	}))
	reg.MustRegister("plain", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	reg.MustRegister("internal", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }), registry.Internal())
	return reg
}

// TestEnqueueChecksFlowAndInputs: the Broker refuses an unknown flow and
// inputs that fail the flow's validation at once, with the errors the
// HTTP layer answers with 404 and 422, and records nothing; it accepts an
// internal flow.
func TestEnqueueChecksFlowAndInputs(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, flow, inputs string
		key                string
		want               error
		wantMsg            string
	}{
		{"unknown flow", "nope", `{}`, "", registry.ErrUnknownFlow, `unknown flow: "nope"`},
		{"unknown flow with a key", "nope", `{}`, "k", registry.ErrUnknownFlow, `unknown flow: "nope"`},
		{"missing field", "greet", `{}`, "", flow.ErrInvalidInputs, `invalid inputs: field "name": is required`},
		{"wrong type", "greet", `{"name":1}`, "", flow.ErrInvalidInputs, `invalid inputs: field "name": must be a string, got number`},
		{"unknown field", "greet", `{"name":"a","x":1}`, "", flow.ErrInvalidInputs, `invalid inputs: field "x": is not a known input`},
		{"input validator", "greet", `{"name":"a","times":-1}`, "", flow.ErrInvalidInputs, `invalid inputs: times must not be negative`},
		{"not an object", "plain", `[1]`, "", flow.ErrInvalidInputs, `invalid inputs: inputs must be a JSON object`},
		{"duplicate key", "plain", `{"a":1,"a":2}`, "", flow.ErrInvalidInputs, `invalid inputs: field "a": is given twice`},
		{"bad inputs with a key", "greet", `{}`, "k", flow.ErrInvalidInputs, `invalid inputs: field "name": is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := queue.NewMemory(queue.MemoryConfig{})
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			b := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: checkedFlows()})
			id, err := b.Enqueue(ctx, tc.flow, json.RawMessage(tc.inputs), queue.EnqueueOptions{IdempotencyKey: tc.key})
			require.ErrorIs(t, err, tc.want)
			assert.EqualError(t, err, tc.wantMsg)
			assert.Empty(t, id)
			if tc.key != "" {
				_, _, err := store.Snapshot(ctx, queue.IdempotentID("", tc.key))
				assert.ErrorIs(t, err, progress.ErrNotFound, "the key is not claimed")
			}
			depth, err := mem.Depth(ctx)
			require.NoError(t, err)
			assert.Zero(t, depth.Ready+depth.Delayed, "nothing queued")
		})
	}

	b := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{Registry: checkedFlows()})
	for _, name := range []string{"greet", "plain", "internal"} {
		inputs := `{"name":"Ada"}`
		_, err := b.Enqueue(ctx, name, json.RawMessage(inputs), queue.EnqueueOptions{})
		assert.NoError(t, err, "flow %s: an internal flow is enqueued from Go as any other", name)
	}
}

// TestEnqueueNilRegistryIsDefault: a Broker without a registry checks
// against registry.Default.
func TestEnqueueNilRegistryIsDefault(t *testing.T) {
	b := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{})
	_, err := b.Enqueue(context.Background(), "queue-test-not-in-default", nil, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, registry.ErrUnknownFlow)
}

// TestEnqueueTyped: EnqueueTyped takes the flow's own input type, checks
// it and the value as Enqueue checks JSON, and refuses another type.
func TestEnqueueTyped(t *testing.T) {
	ctx := context.Background()
	mem := queue.NewMemory(queue.MemoryConfig{})
	b := queue.NewBroker(mem, progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{Registry: checkedFlows()})

	id, err := queue.EnqueueTyped(ctx, b, "greet", greetInput{Name: "Ada", Times: 2}, queue.EnqueueOptions{})
	require.NoError(t, err)
	task, err := mem.Get(ctx, id)
	require.NoError(t, err)
	assert.JSONEq(t, `{"name":"Ada","times":2}`, string(task.Inputs))

	_, err = queue.EnqueueTyped(ctx, b, "greet", otherInput{Name: "Ada"}, queue.EnqueueOptions{})
	require.ErrorIs(t, err, flow.ErrInvalidInputs)
	assert.EqualError(t, err, `invalid inputs: flow "greet" takes inputs of type queue_test.greetInput, not queue_test.otherInput`)
	_, err = queue.EnqueueTyped(ctx, b, "greet", &greetInput{Name: "Ada"}, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, flow.ErrInvalidInputs, "a pointer is another type")

	_, err = queue.EnqueueTyped(ctx, b, "greet", greetInput{Name: "Ada", Times: -1}, queue.EnqueueOptions{})
	assert.EqualError(t, err, `invalid inputs: times must not be negative`, "the value is validated too")

	_, err = queue.EnqueueTyped(ctx, b, "nope", greetInput{Name: "Ada"}, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, registry.ErrUnknownFlow)

	// A flow without an input type takes any value that encodes as an
	// object; others fail its validation.
	_, err = queue.EnqueueTyped(ctx, b, "plain", otherInput{Name: "Ada"}, queue.EnqueueOptions{})
	assert.NoError(t, err)
	_, err = queue.EnqueueTyped(ctx, b, "plain", []int{1}, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, flow.ErrInvalidInputs)
	_, err = queue.EnqueueTyped(ctx, b, "plain", map[string]any{"f": func() {}}, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, flow.ErrInvalidInputs, "a value JSON cannot encode")

	id, err = queue.EnqueueTyped(ctx, b, "greet", greetInput{Name: "Ada"}, queue.EnqueueOptions{IdempotencyKey: "typed"})
	require.NoError(t, err)
	again, err := queue.EnqueueTyped(ctx, b, "greet", greetInput{Name: "Ada"}, queue.EnqueueOptions{IdempotencyKey: "typed"})
	require.NoError(t, err)
	assert.Equal(t, id, again, "options pass through: the same key, the same task")
}
