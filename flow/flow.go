// Package flow defines what a flow is: a piece of Go code, often built on
// langchaingo, that a worker runs for a task and that reports its progress
// as it goes.
//
// A [Flow] is run by a worker for a [Task]. The smallest flow is a
// function, adapted by [Func]:
//
//	hello := flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
//		t.Progress.Log("saying hello")
//		return "hello", nil
//	})
//
// A flow that takes inputs declares them as a struct and is built with
// [Typed]; the struct is its input schema, and inputs are decoded and
// validated ([Validate]) before the task is queued:
//
//	type GreetInput struct {
//		Name string `json:"name" desc:"who to greet"`
//	}
//	greet := flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
//		return "hello " + in.Name, nil
//	})
//
// An error wrapped with [Permanent] fails the task at once, without the
// retries a worker gives other errors.
//
// A step that costs money or time (a model call, a paid API) is run with
// [Step]: its output is recorded once it completes, and a later attempt
// of the task (a retry, or a run after its worker died) gets the recorded
// output back instead of running the step again:
//
//	answer, err := flow.Step(ctx, t, "ask the model", func(ctx context.Context) (string, error) {
//		return llms.GenerateFromSinglePrompt(ctx, model, prompt)
//	})
package flow

import (
	"context"
	"encoding/json"
	"reflect"

	"github.com/flowsrun/flows/progress"
)

// Task is what a running flow receives about the task it runs.
type Task struct {
	// ID is the task's id, as returned by start-task.
	ID string
	// Flow is the name the flow was registered under.
	Flow string
	// Attempt is the number of the lease this run holds, starting at 1
	// (queue.Task.Attempt). Every lease of the task has one, those a
	// worker handed back before running them included (it was shutting
	// down, or could not reach the progress store or the backend), so
	// Attempt can be higher than the runs so far; it is never lower.
	// Delivery is at least once: a task whose worker died is run again
	// with a higher attempt, so side effects should be made idempotent
	// with ID and Attempt.
	Attempt int
	// Inputs is the task's inputs as JSON (an object, possibly empty).
	Inputs json.RawMessage
	// Progress is where the flow reports what it is doing.
	Progress progress.Reporter
	// Checkpoints records the outputs of the flow's completed steps, so
	// that a later attempt replays them instead of running them again
	// (see Step). A worker sets it for every run; nil (a Task made by
	// hand) makes Step call its function every time.
	Checkpoints *Checkpoints
}

// Flow is the unit of work a worker runs. Run gets a context that is
// cancelled when the task is cancelled or its time limit passes; a flow
// should return promptly then. Its result becomes the task's final_result
// (encoded as JSON); an error makes the task FAILURE, once its retries are
// used up (see Permanent), with the error's text in its status.
type Flow interface {
	Run(ctx context.Context, t *Task) (any, error)
}

// Func adapts an ordinary function to a Flow, as http.HandlerFunc does for
// handlers. A Func declares no inputs: it accepts any JSON object.
type Func func(ctx context.Context, t *Task) (any, error)

// Run calls f.
func (f Func) Run(ctx context.Context, t *Task) (any, error) { return f(ctx, t) }

// Validate accepts any JSON object (or no inputs at all).
func (f Func) Validate(inputs json.RawMessage) (json.RawMessage, error) {
	return normalizeObject(inputs)
}

// Validator is implemented by flows that check their inputs. Validate
// returns the inputs in the form the flow will receive them (an empty object
// for absent inputs) or an error wrapping ErrInvalidInputs. Flows that do
// not implement it get their inputs unchecked, apart from being a JSON
// object.
type Validator interface {
	Validate(inputs json.RawMessage) (json.RawMessage, error)
}

// Schemer is implemented by flows that declare an input schema, which the
// flows endpoint lists and the demo page builds its form from.
type Schemer interface {
	InputSchema() *Schema
}

// InputTyper is implemented by flows whose inputs decode into one Go
// type, as those built with Typed do: queue.EnqueueTyped checks the type
// of the inputs it is given against InputType.
type InputTyper interface {
	InputType() reflect.Type
}

// Describer is implemented by flows that describe themselves. The
// registry's Description option takes precedence.
type Describer interface {
	Description() string
}

// Validate checks inputs for f: with f's own Validator when it has one,
// otherwise only that inputs are a JSON object (or empty). Either way,
// inputs in which a key appears twice in one object are refused, naming
// the key: encoding/json would keep the last one silently.
func Validate(f Flow, inputs json.RawMessage) (json.RawMessage, error) {
	v, ok := f.(Validator)
	if !ok {
		return normalizeObject(inputs)
	}
	if _, strict := f.(strictValidator); !strict && json.Valid(inputs) {
		if err := checkDuplicates(inputs); err != nil {
			return nil, err
		}
	}
	return v.Validate(inputs)
}

// strictValidator marks the Validators of this package, which refuse
// duplicate keys themselves (see normalizeObject).
type strictValidator interface{ refusesDuplicateKeys() }

func (Func) refusesDuplicateKeys() {}

// SchemaOf returns f's input schema, or an empty object schema when f
// declares none.
func SchemaOf(f Flow) *Schema {
	if s, ok := f.(Schemer); ok {
		if sc := s.InputSchema(); sc != nil {
			return sc
		}
	}
	return &Schema{Type: "object", Properties: map[string]*Schema{}}
}
