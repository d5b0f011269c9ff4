package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/registry"
)

// check returns the registry's entry of the flow flowName and inputs for
// a new task of it as the flow's validation returns them, or why the
// Broker refuses the task: the flow is not in its registry, or the inputs
// fail the flow's validation.
func (b *Broker) check(flowName string, inputs json.RawMessage) (*registry.Entry, json.RawMessage, error) {
	entry, err := b.cfg.Registry.Lookup(flowName)
	if err != nil {
		return nil, nil, err
	}
	inputs, err = flow.Validate(entry.Flow, inputs)
	return entry, inputs, err
}

// EnqueueTyped is Broker.Enqueue with the inputs as a Go value, encoded
// as JSON. When the flow declares the Go type of its inputs, as a flow
// built with flow.Typed[In, Out] does (flow.InputTyper), In must be that
// type, or EnqueueTyped fails at once with a *flow.InputError (wrapping
// flow.ErrInvalidInputs) that names both types; in is then validated as
// Enqueue validates any inputs, the InputValidator of In included. For
// any other flow, in is validated against the flow's schema. An unknown
// flow fails as it does with Enqueue.
//
// Go generics cannot tie a flow's name to its input type at compile time;
// EnqueueTyped checks at the call what Enqueue would only find in the
// JSON.
func EnqueueTyped[In any](ctx context.Context, b *Broker, flowName string, in In, opts EnqueueOptions) (string, error) {
	entry, err := b.cfg.Registry.Lookup(flowName)
	if err != nil {
		return "", err
	}
	if typed, ok := entry.Flow.(flow.InputTyper); ok {
		if want, got := typed.InputType(), reflect.TypeFor[In](); want != got {
			return "", &flow.InputError{Reason: fmt.Sprintf("flow %q takes inputs of type %s, not %s", flowName, want, got)}
		}
	}
	inputs, err := json.Marshal(in)
	if err != nil {
		return "", &flow.InputError{Reason: "cannot be encoded as JSON: " + err.Error()}
	}
	return b.Enqueue(ctx, flowName, inputs, opts)
}
