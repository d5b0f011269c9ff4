// Package flows is the overview of a module for running AI flows written in
// Go: define a flow, register it under a name, let workers run it
// asynchronously off a queue, and let browsers follow every step live over
// Server-Sent Events.
//
// The root package holds no code; the work is done by its sub-packages:
//
//   - [github.com/flowsrun/flows/flow]: what a flow is ([flow.Flow],
//     [flow.Func], [flow.Typed]).
//   - [github.com/flowsrun/flows/registry]: flows by name.
//   - [github.com/flowsrun/flows/progress]: what a running flow reports, and
//     where it is stored ([progress.Reporter], [progress.Snapshot],
//     [progress.MemoryStore], [progress.Recorder]).
//   - [github.com/flowsrun/flows/queue]: accepting tasks ([queue.Broker])
//     and running them ([queue.Worker]) on a [queue.Backend]
//     ([queue.Memory] for one process).
//   - [github.com/flowsrun/flows/queue/redisbackend]: the queue and the
//     progress store on Redis, for a web process and many workers.
//   - [github.com/flowsrun/flows/ssehttp]: the HTTP API, a [net/http.Handler].
//   - [github.com/flowsrun/flows/flow/lcflow]: langchaingo chains and agents
//     as flows, their steps reported by a callback handler. It is opt-in:
//     the packages above do not import langchaingo.
//   - [github.com/flowsrun/flows/notify]: telling the outside world that a
//     task has finished (e-mail, signed webhooks).
//
// It keeps the HTTP contract of the Python platform (Django, Celery,
// LangChain) it succeeds, so a client written for that platform works
// against it unchanged. This page walks through a program from its first
// flow to running on Redis; the package example below is that program,
// run as a test.
//
// # Defining a flow
//
// A flow is anything with a Run method that takes a context and a
// *flow.Task and returns a result or an error ([flow.Flow]). The result
// becomes the task's final_result (as JSON); an error makes the task
// FAILURE, after retries (see Delivery guarantees). The simplest flow is a
// function, adapted by [flow.Func] as [net/http.HandlerFunc] adapts
// handlers:
//
//	hello := flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
//		t.Progress.Log("saying hello")
//		return "hello, world", nil
//	})
//
// A flow that takes inputs declares them as a struct with json tags, and
// [flow.Typed] makes a flow of a function of that struct. The struct is
// the flow's input schema: every field is required unless its tag says
// omitempty or it is a pointer, and a desc tag describes it. Inputs are
// decoded and checked when the task is started, so a missing field or a
// wrong type is refused at once (HTTP 422) instead of failing later on a
// worker:
//
//	type GreetInput struct {
//		Name string `json:"name" desc:"Who to greet"`
//	}
//
//	greet := flow.Typed(func(ctx context.Context, in GreetInput, t *flow.Task) (string, error) {
//		t.Progress.Progress(50, "Choosing words")
//		t.Progress.Log("greeting " + in.Name)
//		return "Hello, " + in.Name + "!", nil
//	})
//
// An input struct that has a Validate() error method gets it called after
// decoding, for checks a schema cannot say (a blank string, a range).
// Wrap an error in [flow.Permanent] when running the flow again cannot
// help: the task then fails without its retries.
//
// A flow can also be a langchaingo chain or agent executor. [lcflow.Chain]
// turns one into a flow whose inputs are the chain's input keys. Its named
// steps, model calls, tool results and agent actions become step_results
// with no reporting code, and the model's output streams as tokens:
//
//	poem := lcflow.Chain(lcflow.Sequence(
//		lcflow.QuietStep("Choosing a theme", themeChain), // reported, not streamed
//		lcflow.Step("Writing the poem", poemChain),
//	))
//
// See package [github.com/flowsrun/flows/flow/lcflow] for what is
// reported, and the README's "Adding a flow" for the example flows and how
// they pick a model.
//
// # Registering flows
//
// Workers and the HTTP API find flows by name in a registry. Hosts usually
// register at start-up in [registry.Default]; tests and hosts that need
// several sets of flows use their own from [registry.New].
// [registry.Registry.MustRegister] panics on a bad or duplicate name, so a
// misconfigured program stops at start-up:
//
//	reg := registry.New()
//	reg.MustRegister("greet", greet,
//		registry.Description("Greets someone by name"),
//		registry.Label("model", "none"))
//
// The description, input schema and labels are what GET /flows/ lists and
// what a client builds its form from.
//
// # Running workers
//
// A [queue.Worker] fetches tasks from a [queue.Backend], runs their flows
// and records their progress in a [progress.Store]. In one process, both
// are in memory:
//
//	store := progress.NewMemoryStore(progress.MemoryConfig{})
//	backend := queue.NewMemory(queue.MemoryConfig{})
//
//	worker := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: reg, Concurrency: 8})
//	go worker.Run(ctx)
//
// [queue.Worker.Run] works until ctx ends, then shuts down gracefully: it
// stops fetching, lets the flows in flight finish for
// [queue.WorkerConfig].ShutdownGrace, then cancels the rest and gives
// their tasks back to the queue. A panic in a flow becomes a FAILURE with
// a message; it never crashes the worker. Each run has a time limit
// ([queue.BrokerConfig].Timeout), after which the flow's context is
// cancelled and the task ends FAILURE even if the flow ignores it.
//
// # Serving the HTTP API
//
// A [queue.Broker] accepts and cancels tasks; [ssehttp.New] serves them
// over HTTP. The handler can be mounted on any prefix:
//
//	broker := queue.NewBroker(backend, store, queue.BrokerConfig{Registry: reg})
//	api := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg})
//	mux.Handle("/api/", http.StripPrefix("/api", api))
//
// It serves, relative to where it is mounted:
//
//	POST /start-task/          {"flow": "greet", "inputs": {"name": "Ada"}} -> {"task_id": "..."}
//	GET  /task-status/{id}/    the task's progress as a text/event-stream
//	GET  /flows/               the registered flows with their input schemas
//	GET  /tasks/{id}/          the task's current snapshot as JSON (?wait=30s: once it ends)
//	POST /cancel-task/{id}/    ask a pending or running task to stop (202)
//
// Every default message of the event stream carries the task's full
// snapshot, {"state": ..., "details": {"status", "progress", "step_results",
// "final_result"}}; language-model tokens come as "event: token" messages.
// Every message has an id, and a client that reconnects with Last-Event-ID
// gets what it missed and nothing twice. Errors are {"error": "..."} with a
// fitting status. A front end served from another origin is listed in
// [ssehttp.Config].CORS. See package [github.com/flowsrun/flows/ssehttp]
// for the details and the options (authorizer, body limit, heartbeats,
// cross-origin use).
//
// # Reporting progress
//
// A running flow reports through t.Progress, a [progress.Reporter]:
//
//	t.Progress.Status("Reading the question")          // the status line
//	t.Progress.Progress(40, "Searching")               // percent, and status
//	t.Progress.Log("found 3 pages")                    // a "log" step
//	t.Progress.ToolResult("search", "web_search", hits) // a "tool_result" step, data as JSON
//	t.Progress.Token("Once ")                          // streamed model output
//
// The worker adds the rest: PROGRESS when the flow starts, and SUCCESS
// (progress 100, final_result) or FAILURE (the reason in details.status)
// when it ends. Reporting never fails the flow: an event that cannot be
// recorded is logged by the worker's reporter, which first sends it again
// for a while when the store could not be reached (see
// [github.com/flowsrun/flows/progress.TaskReporter]).
//
// # Durable steps
//
// A step that costs money or time (a model call, a paid API) is run with
// [github.com/flowsrun/flows/flow.Step]: its output is recorded when it
// completes, and a later attempt of the task (a retry, or a run after its
// worker died) gets it back instead of paying again, logging "<name>:
// replayed from attempt N":
//
//	pages, err := flow.Step(ctx, t, "search", func(ctx context.Context) ([]Page, error) {
//		return search(ctx, in.Question)
//	})
//
// Flows built with [github.com/flowsrun/flows/flow/lcflow] need nothing:
// every model and tool call is recorded that way, keyed by a hash of its
// input, so a prompt changed between attempts runs again.
//
// # Testing a flow
//
// A flow is unit tested without a queue or a server: run it with a
// [progress.Recorder] as its reporter, then look at what it reported, as a
// watcher would have seen it:
//
//	rec := progress.NewRecorder()
//	task := &flow.Task{ID: "test-1", Attempt: 1, Inputs: json.RawMessage(`{"name": "Grace"}`), Progress: rec}
//	out, err := greet.Run(ctx, task) // "Hello, Grace!", nil
//	snap := rec.Snapshot()           // snap.Details.Progress == 50
//
// [flow.Validate] checks inputs against a flow's schema as start-task
// does. For end-to-end tests, the in-memory backend and
// [net/http/httptest] are enough (see the examples).
//
// # Running on Redis
//
// In memory, everything lives in one process and is lost when it exits.
// With [redisbackend.New], the queue and the progress store live in Redis:
// one web process and any number of worker processes, on any machines,
// share the tasks, and any of them can restart without losing one. One
// Backend is both the queue and the store; passing nil as the store says
// so, and lets the broker and the workers take fewer round trips per task:
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{
//		InitAddress:  []string{"127.0.0.1:6379"},
//		DisableCache: true, // the backend reads nothing through rueidis' client-side cache
//	})
//	...
//	backend, err := redisbackend.New(client, redisbackend.Config{})
//	...
//	broker := queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: reg}) // in the web process
//	worker := queue.NewWorker(backend, nil, queue.WorkerConfig{Registry: reg}) // in each worker
//
// Run Redis with appendonly yes: without persistence a restart of Redis
// loses every task. The README's "Running with Redis" says what each
// setting keeps, and its "Containers" runs the whole platform (server,
// workers, Redis, PostgreSQL) with Docker Compose.
//
// # Delivery guarantees
//
//   - A task accepted by start-task is run at least once while its backend
//     keeps its data. A task whose worker dies is run again within
//     seconds, once the worker has missed three heartbeats
//     ([queue.WorkerConfig].Heartbeat), or at the latest once its lease
//     passes, with a higher [flow.Task].Attempt, so side effects should be
//     made idempotent with the task's ID and Attempt. A failed run is
//     retried with backoff until [queue.BrokerConfig].MaxAttempts; errors
//     wrapping [flow.ErrPermanent] (see [flow.Permanent]) or
//     [flow.ErrInvalidInputs], and panics, are not retried.
//   - A task reaches exactly one terminal state, SUCCESS or FAILURE: the
//     progress store refuses every event after the first terminal one.
//     Cancellation and exhausted retries are FAILURE with the reason in
//     details.status.
//   - A task's events reach a watcher in order, without gaps or repeats,
//     across reconnects, while the task's retention lasts.
//
// The in-memory backend keeps these promises within one process; what it
// holds is lost when the process exits.
//
// # Running the demo
//
// The repository ships a demo server with three example flows built with
// langchaingo (a poem, a web search, an agent) and a web page to start them
// and watch them run. It needs nothing else running: without API keys the
// flows use an offline scripted model and sample search results, labelled
// as such:
//
//	go run ./examples/server
//
// then open http://localhost:8080.
//
// [flow.Flow]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Flow
// [flow.Func]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Func
// [flow.Typed]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Typed
// [flow.Task]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Task
// [flow.Permanent]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Permanent
// [flow.ErrPermanent]: https://pkg.go.dev/github.com/flowsrun/flows/flow#ErrPermanent
// [flow.ErrInvalidInputs]: https://pkg.go.dev/github.com/flowsrun/flows/flow#ErrInvalidInputs
// [flow.Validate]: https://pkg.go.dev/github.com/flowsrun/flows/flow#Validate
// [lcflow.Chain]: https://pkg.go.dev/github.com/flowsrun/flows/flow/lcflow#Chain
// [registry.Default]: https://pkg.go.dev/github.com/flowsrun/flows/registry#Default
// [registry.New]: https://pkg.go.dev/github.com/flowsrun/flows/registry#New
// [registry.Registry.MustRegister]: https://pkg.go.dev/github.com/flowsrun/flows/registry#Registry.MustRegister
// [progress.Reporter]: https://pkg.go.dev/github.com/flowsrun/flows/progress#Reporter
// [progress.Snapshot]: https://pkg.go.dev/github.com/flowsrun/flows/progress#Snapshot
// [progress.Store]: https://pkg.go.dev/github.com/flowsrun/flows/progress#Store
// [progress.MemoryStore]: https://pkg.go.dev/github.com/flowsrun/flows/progress#MemoryStore
// [progress.Recorder]: https://pkg.go.dev/github.com/flowsrun/flows/progress#Recorder
// [queue.Broker]: https://pkg.go.dev/github.com/flowsrun/flows/queue#Broker
// [queue.Worker]: https://pkg.go.dev/github.com/flowsrun/flows/queue#Worker
// [queue.Worker.Run]: https://pkg.go.dev/github.com/flowsrun/flows/queue#Worker.Run
// [queue.WorkerConfig]: https://pkg.go.dev/github.com/flowsrun/flows/queue#WorkerConfig
// [queue.BrokerConfig]: https://pkg.go.dev/github.com/flowsrun/flows/queue#BrokerConfig
// [queue.Backend]: https://pkg.go.dev/github.com/flowsrun/flows/queue#Backend
// [queue.Memory]: https://pkg.go.dev/github.com/flowsrun/flows/queue#Memory
// [redisbackend.New]: https://pkg.go.dev/github.com/flowsrun/flows/queue/redisbackend#New
// [ssehttp.New]: https://pkg.go.dev/github.com/flowsrun/flows/ssehttp#New
// [ssehttp.Config]: https://pkg.go.dev/github.com/flowsrun/flows/ssehttp#Config
package flows
