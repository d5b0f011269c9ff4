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

// A step's output is recorded once it completes: the next attempt of the
// task (after the first failed at its second step) replays it, and only
// the failed step runs again. A worker gives each run its Checkpoints;
// here a MemoryStore stands in for the worker's store.
func ExampleStep() {
	ctx := context.Background()
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	if err := store.Create(ctx, "task-1"); err != nil {
		panic(err)
	}
	summarizeFails := true
	research := flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		pages, err := flow.Step(ctx, t, "search", func(ctx context.Context) ([]string, error) {
			fmt.Println("  searching (a paid call)")
			return []string{"page one", "page two"}, nil
		})
		if err != nil {
			return nil, err
		}
		return flow.Step(ctx, t, "summarize", func(ctx context.Context) (string, error) {
			fmt.Println("  summarizing")
			if summarizeFails {
				summarizeFails = false
				return "", errors.New("model overloaded")
			}
			return strings.Join(pages, " + "), nil
		})
	})

	for attempt := 1; attempt <= 2; attempt++ {
		fmt.Println("attempt", attempt)
		rec := progress.NewRecorder()
		out, err := research.Run(ctx, &flow.Task{
			ID: "task-1", Attempt: attempt, Progress: rec,
			Checkpoints: flow.NewCheckpoints(flow.CheckpointsConfig{Store: store, TaskID: "task-1", Attempt: attempt}),
		})
		for _, st := range rec.Snapshot().Details.StepResults {
			fmt.Println("  log:", st.Message)
		}
		fmt.Printf("  result: %v, error: %v\n", out, err)
	}
	// Output:
	// attempt 1
	//   searching (a paid call)
	//   summarizing
	//   result: , error: model overloaded
	// attempt 2
	//   summarizing
	//   log: search: replayed from attempt 1
	//   result: page one + page two, error: <nil>
}
