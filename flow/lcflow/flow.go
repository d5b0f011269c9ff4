package lcflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tmc/langchaingo/chains"

	"github.com/flowsrun/flows/flow"
)

// ErrMissingOutput is returned (wrapped) when the chain's outputs lack the
// key the flow takes its result from.
var ErrMissingOutput = errors.New("lcflow: chain returned no value for the output key")

// Flow is a flow.Flow that runs a langchaingo chain, an agent executor
// included (it is a chain), with a Handler reporting what the chain does.
// Build one with Chain; set the fields before registering it. A Flow is
// read-only once registered and is shared by the tasks that run it.
type Flow struct {
	// Chain is the chain to run.
	Chain chains.Chain
	// OutputKey is the output whose value becomes the task's final
	// result. Empty means the chain's only output key; for a chain with
	// several, "text" or "output" when the chain returns it; otherwise the
	// whole output map is the result.
	OutputKey string
	// About is the flow's description, listed by the flows endpoint (the
	// registry's Description option takes precedence).
	About string
	// InputDescriptions describes the chain's input keys, by key, in the
	// input schema.
	InputDescriptions map[string]string
	// CallOptions are passed to every run of the chain, after the option
	// that streams model output to the Handler.
	CallOptions []chains.ChainCallOption
}

var (
	_ flow.Flow      = (*Flow)(nil)
	_ flow.Validator = (*Flow)(nil)
	_ flow.Schemer   = (*Flow)(nil)
)

// Chain returns a Flow running c. It panics if c is nil, so that a
// misdeclared flow fails at start-up.
//
// The task's inputs (a JSON object) become the chain's input values, one
// string per input key; the chain's output becomes the final result (see
// Flow.OutputKey). While the chain runs, a Handler reports its named steps
// (Step), model calls (Model), tools (Tool) and agent actions (Callbacks)
// to the task's progress, and every chunk a model streams becomes a token
// event. An error of the chain is the flow's error, and so the task's
// failure reason; a provider's refusal that no retry can fix (a wrong
// key, an unknown model, a request too long: see PermanentIfRefused)
// fails the task at once, without its other attempts.
func Chain(c chains.Chain) *Flow {
	if c == nil {
		panic("lcflow.Chain: nil chain")
	}
	return &Flow{Chain: c}
}

// Description returns About.
func (f *Flow) Description() string { return f.About }

// inputKeys returns the keys the caller must give: the chain's input keys
// less those its memory provides.
func (f *Flow) inputKeys() []string {
	keys := f.Chain.GetInputKeys()
	var fromMemory []string
	if m := f.Chain.GetMemory(); m != nil {
		fromMemory = m.MemoryVariables(context.Background())
	}
	var out []string
	for _, k := range keys {
		if !slices.Contains(fromMemory, k) && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// InputSchema describes the chain's input keys as required string fields.
func (f *Flow) InputSchema() *flow.Schema {
	s := &flow.Schema{Type: "object", Properties: map[string]*flow.Schema{}}
	for _, k := range f.inputKeys() {
		s.Properties[k] = &flow.Schema{Type: "string", Description: f.InputDescriptions[k]}
		s.Order = append(s.Order, k)
		s.Required = append(s.Required, k)
	}
	return s
}

// Validate checks that inputs is a JSON object giving a string for each of
// the chain's input keys and nothing else, so that bad inputs are refused
// at start-task rather than failing the task.
func (f *Flow) Validate(inputs json.RawMessage) (json.RawMessage, error) {
	norm, err := flow.Func(nil).Validate(inputs)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(norm, &fields); err != nil {
		return nil, &flow.InputError{Reason: "inputs must be a JSON object"}
	}
	keys := f.inputKeys()
	for _, k := range keys {
		raw, ok := fields[k]
		if !ok || string(raw) == "null" {
			return nil, &flow.InputError{Field: k, Reason: "is required"}
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, &flow.InputError{Field: k, Reason: "must be a string"}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(keys, k) {
			return nil, &flow.InputError{Field: k, Reason: "is not a known input"}
		}
	}
	return norm, nil
}

// Run runs the chain for task t with a new Handler (TaskHandler)
// reporting to t.Progress and recording the model and tool calls in
// t.Checkpoints, and returns the chain's output (see OutputKey). The
// chain's error is returned through PermanentIfRefused.
func (f *Flow) Run(ctx context.Context, t *flow.Task) (any, error) {
	inputs := map[string]any{}
	if len(t.Inputs) > 0 {
		if err := json.Unmarshal(t.Inputs, &inputs); err != nil {
			return nil, fmt.Errorf("lcflow: decoding inputs: %w", err)
		}
		if inputs == nil { // the inputs were JSON null
			inputs = map[string]any{}
		}
	}
	h := TaskHandler(t)
	ctx = WithHandler(ctx, h)
	opts := append([]chains.ChainCallOption{chains.WithCallback(h)}, f.CallOptions...)
	out, err := chains.Call(ctx, f.Chain, inputs, opts...)
	h.flushTokens()
	if err != nil {
		return nil, PermanentIfRefused(err)
	}
	return f.result(out)
}

func (f *Flow) result(out map[string]any) (any, error) {
	key := f.OutputKey
	if key == "" {
		if keys := f.Chain.GetOutputKeys(); len(keys) == 1 {
			key = keys[0]
		} else {
			for _, k := range []string{"text", "output"} {
				if _, ok := out[k]; ok {
					key = k
					break
				}
			}
		}
	}
	if key == "" {
		return out, nil
	}
	v, ok := out[key]
	if !ok {
		return nil, fmt.Errorf("%w %q (the chain returned %q)", ErrMissingOutput, key, slices.Sorted(maps.Keys(out)))
	}
	return v, nil
}
