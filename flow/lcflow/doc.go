// Package lcflow runs langchaingo chains and agents as flows whose steps
// appear live in the browser without extra code.
//
// It is opt-in: the core packages of the module do not import langchaingo,
// and lcflow imports only langchaingo's chains, callbacks, llms, schema and
// tools packages. Model providers (googleai, openai, ollama...) are chosen
// by the program that builds the chains, so it pays only for those it uses.
//
// # A flow from a chain
//
// Name the steps with [Step], wrap the model with [Model], and turn the
// chain into a flow with [Chain]:
//
//	model := lcflow.Model(llm) // any llms.Model
//	theme := chains.NewLLMChain(model, prompts.NewPromptTemplate("Suggest a theme for a poem.", nil))
//	theme.OutputKey = "theme"
//	poem := chains.NewLLMChain(model, prompts.NewPromptTemplate("Write a short poem about {{.theme}}.", []string{"theme"}))
//	registry.MustRegister("poem_flow", lcflow.Chain(lcflow.Sequence(
//		lcflow.QuietStep("Choosing a theme", theme),
//		lcflow.Step("Writing the poem", poem),
//	)))
//
// A task of poem_flow then shows, as it runs:
//
//	{"type": "log", "message": "Choosing a theme: started"}
//	{"type": "log", "message": "Calling the language model"}
//	{"type": "log", "message": "Choosing a theme: done"}
//	{"type": "log", "message": "Writing the poem: started"}
//	...
//
// with the status line naming the current step, the progress bar moving at
// each step and model call (never reaching 100 before the task succeeds),
// the poem streamed as token events while it is written, and the poem as
// the final result.
//
// # What is reported
//
// langchaingo calls a callbacks.Handler on chain, model, tool and agent
// events, but passes no step or tool names. Each task gets its own [Handler]
// (see Handler for the full list of what it reports), carried in the
// context of the run, and the pieces below find it there:
//
//   - [Step] names a chain; its start and end become log entries, and tool
//     results inside it carry its name.
//   - [Model] reports model calls for any llms.Model.
//   - [Tool] reports a tool's output as a tool_result (parsed when it is
//     JSON); [ToolChain] calls a tool as a step of a chain.
//   - [Callbacks] is the handler to give langchaingo components that take one
//     when they are built, agents above all:
//     agents.NewExecutor(agent, agents.WithCallbacksHandler(lcflow.Callbacks))
//     reports each agent action ("Using tool X with input Y") and finish.
//   - Streaming needs nothing: Flow.Run asks the chains to stream, and each
//     chunk becomes a token event (QuietStep keeps a step's tokens out of
//     the stream).
//
// Because the handler travels in the context, the chains, models and tools
// are built once and shared by every task; concurrent tasks never see each
// other's events. Flows written in plain Go (flow.Func, flow.Typed) work
// beside lcflow flows and may run chains themselves with WithHandler.
//
// # Tracing
//
// Inside a traced run of a task (a worker with an OpenTelemetry tracer
// provider, see queue.WorkerConfig.TracerProvider), each Step is a span
// "step <name>", each call of a Tool or ToolChain a span "execute_tool
// <tool>" and each call of a Model a span "chat", children of the
// innermost step, with the GenAI attributes gen_ai.operation.name and
// gen_ai.tool.name and an error status when they fail. They use the
// tracer provider of the run's span; outside a traced run they cost
// nothing.
package lcflow
