package progress_test

import (
	"context"
	"fmt"

	"github.com/flowsrun/flows/progress"
)

// A Recorder stands in for the worker's reporter in a unit test of a flow:
// the test looks at what the flow reported afterwards.
func ExampleRecorder() {
	writePoem := func(p progress.Reporter) string {
		p.Progress(10, "Choosing a subject")
		p.Log("subject: the sea")
		for _, word := range []string{"Waves ", "keep ", "time."} {
			p.Token(word)
		}
		p.Progress(90, "Polishing")
		return "Waves keep time."
	}

	rec := progress.NewRecorder()
	poem := writePoem(rec)

	snap := rec.Snapshot()
	fmt.Println(poem == rec.Tokens())
	fmt.Println(snap.State, snap.Details.Progress, snap.Details.Status)
	for _, step := range snap.Details.StepResults {
		fmt.Println(step.Type, step.Message)
	}
	fmt.Println(len(rec.Events()), "events")
	// Output:
	// true
	// PROGRESS 90 Polishing
	// log subject: the sea
	// 6 events
}

// A MemoryStore records a task's events and snapshot and delivers them to
// subscribers, from the first event or from any id on.
func ExampleMemoryStore() {
	ctx := context.Background()
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	_ = store.Create(ctx, "task-1")

	events, _ := store.Subscribe(ctx, "task-1", "")
	r := progress.NewTaskReporter(store, "task-1", nil)
	_ = r.Start(ctx, "Started")
	r.Progress(50, "Half way")
	_ = r.Succeed(ctx, "done")

	for e := range events { // closed after the terminal event
		fmt.Println(e.ID, e.Type, e.State, e.Status)
	}
	snap, lastID, _ := store.Snapshot(ctx, "task-1")
	fmt.Println(snap.State, snap.Details.Progress, string(snap.Details.FinalResult), lastID)
	// Output:
	// 1 state PROGRESS Started
	// 2 progress  Half way
	// 3 state SUCCESS Completed
	// SUCCESS 100 "done" 3
}
