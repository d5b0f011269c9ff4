package ssehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// Example mounts the API under /api next to the host's own routes, runs a
// worker in the same process, starts a task and follows its event stream
// to the end.
func Example() {
	reg := registry.New()
	reg.MustRegister("hello", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Log("saying hello")
		return "hello, world", nil
	}))

	store := progress.NewMemoryStore(progress.MemoryConfig{})
	backend := queue.NewMemory(queue.MemoryConfig{})
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{})
	worker := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: reg, Concurrency: 4})
	ctx, stopWorker := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	defer func() { stopWorker(); <-done }()

	api := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	srv := httptest.NewServer(mux) // in a real host: http.ListenAndServe(":8080", mux)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/api/start-task/", "application/json", strings.NewReader(`{"flow":"hello"}`))
	if err != nil {
		panic(err)
	}
	var started struct {
		TaskID string `json:"task_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()

	stream, err := http.Get(srv.URL + "/api/task-status/" + started.TaskID + "/")
	if err != nil {
		panic(err)
	}
	defer stream.Body.Close()
	var last progress.Snapshot
	lines := bufio.NewScanner(stream.Body)
	for lines.Scan() { // until the server ends the stream
		if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok {
			_ = json.Unmarshal([]byte(data), &last)
		}
	}
	fmt.Println(last.State, string(last.Details.FinalResult), last.Details.StepResults[0].Message)
	// Output: SUCCESS "hello, world" saying hello
}
