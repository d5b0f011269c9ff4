package lcflow

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/schema"
)

// StepChain is a chain with a name: a step of a flow as the user sees it.
// Build one with Step. Running it under a Handler (inside a Flow) logs
// "<Name>: started", then "<Name>: done" or "<Name>: failed: <error>",
// moves the progress bar, and names the step of the tool results reported
// while it runs. Outside a Flow it runs the inner chain and reports
// nothing.
//
// A StepChain holds no state of its own and may be shared by concurrent
// tasks.
type StepChain struct {
	// Name is shown in the step results and the status line.
	Name string
	// Chain is the chain the step runs, with chains.Call (its memory, its
	// own callbacks handler and its input checks apply).
	Chain chains.Chain
	// Quiet drops the tokens the step's models stream. Set it on the
	// intermediate steps of a flow so that the streamed text is the final
	// answer alone; the step's log entries and tool results are still
	// reported.
	Quiet bool
}

var _ chains.Chain = (*StepChain)(nil)

// Step names c. It panics if name is empty or c is nil, so that a
// misdeclared flow fails at start-up.
func Step(name string, c chains.Chain) *StepChain {
	if name == "" {
		panic("lcflow.Step: empty name")
	}
	if c == nil {
		panic("lcflow.Step: nil chain")
	}
	return &StepChain{Name: name, Chain: c}
}

// QuietStep is Step with Quiet set: the step is reported, its tokens are
// not.
func QuietStep(name string, c chains.Chain) *StepChain {
	s := Step(name, c)
	s.Quiet = true
	return s
}

// Call runs the inner chain as the named step. An error is returned
// wrapped with the step's name.
func (s *StepChain) Call(ctx context.Context, inputs map[string]any, options ...chains.ChainCallOption) (map[string]any, error) {
	h := HandlerFromContext(ctx)
	ctx, span := startSpan(ctx, "step ", s.Name, attrStep.String(s.Name))
	ended := false
	defer endUnlessEnded(span, &ended)
	ctx = withStep(ctx, s.Name, s.Quiet)
	if h != nil {
		h.stepStarted(s.Name)
	}
	out, err := chains.Call(ctx, s.Chain, inputs, options...)
	endSpan(span, err)
	ended = true
	if err != nil {
		if h != nil {
			h.stepFailed(s.Name, err)
		}
		return out, fmt.Errorf("%s: %w", s.Name, err)
	}
	if h != nil {
		h.stepDone(s.Name)
	}
	return out, nil
}

// GetMemory returns a memory that remembers nothing: the inner chain's
// memory is used by chains.Call inside Call.
func (s *StepChain) GetMemory() schema.Memory { return noMemory{} }

// GetInputKeys returns the inner chain's input keys.
func (s *StepChain) GetInputKeys() []string { return s.Chain.GetInputKeys() }

// GetOutputKeys returns the inner chain's output keys.
func (s *StepChain) GetOutputKeys() []string { return s.Chain.GetOutputKeys() }

// SequenceChain runs chains one after the other, each seeing the flow's
// inputs and the outputs of every chain before it (a later output replaces
// an earlier value of the same key). Build one with Sequence.
//
// It differs from chains.SequentialChain, whose chains see only the
// outputs of the chain just before them and must not reuse an output key:
// here a step that answers a question from search results can read both
// the question (an input) and the results (the previous step's output).
type SequenceChain struct {
	chains  []chains.Chain
	inputs  []string
	outputs []string
}

var _ chains.Chain = (*SequenceChain)(nil)

// Sequence returns a chain running cs in order. Its input keys are the
// keys the chains read that no earlier chain writes; its output keys are
// the last chain's. It panics if cs is empty or holds a nil chain.
func Sequence(cs ...chains.Chain) *SequenceChain {
	if len(cs) == 0 {
		panic("lcflow.Sequence: no chains")
	}
	known := map[string]bool{}
	var inputs []string
	for i, c := range cs {
		if c == nil {
			panic(fmt.Sprintf("lcflow.Sequence: chain %d is nil", i))
		}
		for _, k := range c.GetInputKeys() {
			if !known[k] {
				known[k] = true
				inputs = append(inputs, k)
			}
		}
		for _, k := range c.GetOutputKeys() {
			known[k] = true
		}
	}
	return &SequenceChain{
		chains:  slices.Clone(cs),
		inputs:  inputs,
		outputs: slices.Clone(cs[len(cs)-1].GetOutputKeys()),
	}
}

// Call runs the chains in order with chains.Call and returns the last
// chain's outputs.
func (s *SequenceChain) Call(ctx context.Context, inputs map[string]any, options ...chains.ChainCallOption) (map[string]any, error) {
	values := maps.Clone(inputs)
	if values == nil {
		values = map[string]any{}
	}
	var out map[string]any
	for _, c := range s.chains {
		var err error
		out, err = chains.Call(ctx, c, values, options...)
		if err != nil {
			return nil, err
		}
		maps.Copy(values, out)
	}
	return out, nil
}

// GetMemory returns a memory that remembers nothing.
func (s *SequenceChain) GetMemory() schema.Memory { return noMemory{} }

// GetInputKeys returns the keys the chains need from the caller.
func (s *SequenceChain) GetInputKeys() []string { return slices.Clone(s.inputs) }

// GetOutputKeys returns the last chain's output keys.
func (s *SequenceChain) GetOutputKeys() []string { return slices.Clone(s.outputs) }

// noMemory is a schema.Memory that remembers nothing.
type noMemory struct{}

func (noMemory) GetMemoryKey(context.Context) string                               { return "" }
func (noMemory) MemoryVariables(context.Context) []string                          { return nil }
func (noMemory) Clear(context.Context) error                                       { return nil }
func (noMemory) SaveContext(context.Context, map[string]any, map[string]any) error { return nil }
func (noMemory) LoadMemoryVariables(context.Context, map[string]any) (map[string]any, error) {
	return map[string]any{}, nil
}
