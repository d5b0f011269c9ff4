package flows_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// GreetInput is the input of the quick start's flow. The struct is the
// flow's input schema: "name" is a required string.
type GreetInput struct {
	Name string `json:"name" desc:"Who to greet"`
}

// greet is the quick start's flow.
var greet = flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
	t.Progress.Progress(50, "Choosing words")
	t.Progress.Log("greeting " + in.Name)
	return "Hello, " + in.Name + "!", nil
})

// Example is the quick start of the README, end to end on the in-memory
// backend: define a flow, register it, run a worker, mount the HTTP API,
// then start a task over HTTP and follow its event stream to the end.
func Example() {
	// Register the flow.
	reg := registry.New()
	reg.MustRegister("greet", greet, registry.Description("Greets someone by name"))

	// One process: in-memory queue and progress store.
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	backend := queue.NewMemory(queue.MemoryConfig{})

	// Run a worker until ctx ends.
	ctx, stop := context.WithCancel(context.Background())
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: reg})
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	defer func() { stop(); <-done }()

	// Mount the HTTP API under /api/.
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
	api := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	srv := httptest.NewServer(mux) // a real host calls http.ListenAndServe(":8080", mux)
	defer srv.Close()

	// A client starts a task...
	resp, err := http.Post(srv.URL+"/api/start-task/", "application/json",
		strings.NewReader(`{"flow": "greet", "inputs": {"name": "Ada"}}`))
	if err != nil {
		panic(err)
	}
	var started struct {
		TaskID string `json:"task_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	fmt.Println("start-task:", resp.StatusCode)

	// ...and follows it: every default message is the task's snapshot;
	// the server ends the stream after the terminal one.
	stream, err := http.Get(srv.URL + "/api/task-status/" + started.TaskID + "/")
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()
	var last progress.Snapshot
	lines := bufio.NewScanner(stream.Body)
	for lines.Scan() {
		if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			_ = json.Unmarshal([]byte(data), &last)
		}
	}
	fmt.Println(last.State, last.Details.Progress, string(last.Details.FinalResult))
	for _, step := range last.Details.StepResults {
		fmt.Println(step.Type+":", step.Message)
	}

	// Inputs that do not fit the flow's struct are refused before the
	// task is queued.
	resp, err = http.Post(srv.URL+"/api/start-task/", "application/json",
		strings.NewReader(`{"flow": "greet", "inputs": {}}`))
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("start-task:", resp.StatusCode, strings.TrimSpace(string(body)))

	// Output:
	// start-task: 200
	// SUCCESS 100 "Hello, Ada!"
	// log: greeting Ada
	// start-task: 422 {"error":"invalid inputs: field \"name\": is required"}
}

// A flow is tested without a queue or a server: run it with a
// progress.Recorder as its reporter, then look at what it reported.
func Example_testingAFlow() {
	rec := progress.NewRecorder()
	task := &flow.Task{ID: "test-1", Attempt: 1, Inputs: json.RawMessage(`{"name": "Grace"}`), Progress: rec}

	out, err := greet.Run(context.Background(), task)
	fmt.Println(out, err)

	snap := rec.Snapshot()
	fmt.Println(snap.Details.Progress, snap.Details.Status)
	for _, step := range snap.Details.StepResults {
		fmt.Println(step.Type+":", step.Message)
	}
	// Output:
	// Hello, Grace! <nil>
	// 50 Choosing words
	// log: greeting Grace
}
