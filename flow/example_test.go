package flow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

// GreetInput is the input of the greeting flow: the struct is the schema.
type GreetInput struct {
	Name  string `json:"name" desc:"who to greet"`
	Shout bool   `json:"shout,omitempty" desc:"greet in capitals"`
}

// A typed flow declares its inputs as a struct. Inputs are validated before
// a task is queued, and a unit test can run the flow with a
// progress.Recorder to see what it reported.
func ExampleTyped() {
	greet := flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
		t.Progress.Progress(50, "Choosing words")
		t.Progress.Log("greeting " + in.Name)
		msg := "Hello, " + in.Name
		if in.Shout {
			msg = strings.ToUpper(msg)
		}
		t.Progress.Token(msg)
		return msg, nil
	})

	// What start-task does with a request's inputs.
	_, err := greet.Validate(json.RawMessage(`{"shout": true}`))
	fmt.Println(errors.Is(err, flow.ErrInvalidInputs), err)
	inputs, err := greet.Validate(json.RawMessage(`{"name": "Ada", "shout": true}`))
	if err != nil {
		panic(err)
	}

	// What a worker does, with a Recorder in place of the task's reporter.
	rec := progress.NewRecorder()
	out, err := greet.Run(context.Background(), &flow.Task{ID: "task-1", Attempt: 1, Inputs: inputs, Progress: rec})
	fmt.Println(out, err)

	snap := rec.Snapshot()
	fmt.Println(snap.State, snap.Details.Progress, snap.Details.Status)
	fmt.Println(snap.Details.StepResults[0].Message)
	fmt.Println(rec.Tokens())

	schema, _ := json.Marshal(greet.InputSchema())
	fmt.Println(string(schema))
	// Output:
	// true invalid inputs: field "name": is required
	// HELLO, ADA <nil>
	// PROGRESS 50 Choosing words
	// greeting Ada
	// HELLO, ADA
	// {"type":"object","properties":{"name":{"type":"string","description":"who to greet"},"shout":{"type":"boolean","description":"greet in capitals"}},"required":["name"],"x-order":["name","shout"]}
}

// The smallest flow is a function.
func ExampleFunc() {
	hello := flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Log("saying hello")
		return "hello", nil
	})
	rec := progress.NewRecorder()
	out, _ := hello.Run(context.Background(), &flow.Task{Progress: rec})
	fmt.Println(out, len(rec.Events()))
	// Output: hello 1
}
