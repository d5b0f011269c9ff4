package ssehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
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

// ExampleCORS lets a front end on https://app.example.com use the API: the
// browser's preflight before a JSON start-task is answered, naming the
// page's origin, the route's methods and the headers the API reads.
func ExampleCORS() {
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{})
	api := ssehttp.New(ssehttp.Config{
		Queue: broker, Progress: store, Registry: registry.New(),
		CORS: ssehttp.CORS{AllowedOrigins: []string{"https://app.example.com"}},
	})

	// What the browser sends before fetch(api + "/start-task/", {method:
	// "POST", headers: {"Content-Type": "application/json"}, ...}).
	preflight := httptest.NewRequest(http.MethodOptions, "/start-task/", nil)
	preflight.Header.Set("Origin", "https://app.example.com")
	preflight.Header.Set("Access-Control-Request-Method", "POST")
	preflight.Header.Set("Access-Control-Request-Headers", "content-type")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, preflight)

	fmt.Println(rec.Code)
	for _, name := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"} {
		fmt.Printf("%s: %s\n", name, rec.Header().Get(name))
	}
	// Output:
	// 204
	// Access-Control-Allow-Origin: https://app.example.com
	// Access-Control-Allow-Methods: POST
	// Access-Control-Allow-Headers: Content-Type, Last-Event-ID, Idempotency-Key
	// Access-Control-Max-Age: 600
}

// ExampleConfig_identify makes every task belong to the user that started
// it. Identify names the caller from its bearer token (a session cookie
// works the same way) and marks admins as operators; Authorize keeps one
// costly flow for admins. Another user asking for the task gets the 404
// of an unknown id.
func ExampleConfig_identify() {
	users := map[string]ssehttp.Principal{ // token -> user; your session store
		"t-ada":   {ID: "ada"},
		"t-bob":   {ID: "bob"},
		"t-admin": {ID: "root", Operator: true},
	}
	reg := registry.New()
	reg.MustRegister("report", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) { return "done", nil }))
	reg.MustRegister("deep_research", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) { return "done", nil }))
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{Registry: reg})

	api := ssehttp.New(ssehttp.Config{
		Queue: broker, Progress: store, Registry: reg,
		Identify: func(r *http.Request) (ssehttp.Principal, error) {
			token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			user, ok := users[token]
			if !ok {
				return ssehttp.Principal{}, errors.New("log in first")
			}
			return user, nil
		},
		Authorize: func(r *http.Request, a ssehttp.Access) error {
			if a.Action == ssehttp.ActionStart && a.Flow == "deep_research" && !a.Principal.Operator {
				return errors.New("deep_research is for admins")
			}
			return nil
		},
	})

	call := func(token, method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	_, started := call("t-ada", "POST", "/start-task/", `{"flow":"report"}`)
	var task struct {
		TaskID string `json:"task_id"`
	}
	_ = json.Unmarshal([]byte(started), &task)

	fmt.Println(call("", "GET", "/tasks/"+task.TaskID+"/", ""))
	fmt.Println(call("t-bob", "GET", "/tasks/"+task.TaskID+"/", ""))
	code, _ := call("t-ada", "GET", "/tasks/"+task.TaskID+"/", "")
	fmt.Println(code)
	code, _ = call("t-admin", "GET", "/tasks/"+task.TaskID+"/", "")
	fmt.Println(code)
	fmt.Println(call("t-bob", "POST", "/start-task/", `{"flow":"deep_research"}`))
	// Output:
	// 401 {"error":"log in first"}
	// 404 {"error":"task not found"}
	// 200
	// 200
	// 403 {"error":"deep_research is for admins"}
}
