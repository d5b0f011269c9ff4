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
// beside lcflow flows and may run chains themselves with [WithHandler]
// and the task's own Handler, from [TaskHandler], whose calls are
// recorded as a Flow's are (see Durable calls):
//
//	h := lcflow.TaskHandler(t)
//	ctx = lcflow.WithHandler(ctx, h)
//	return chains.Run(ctx, summarise, text, chains.WithCallback(h))
//
// # Durable calls
//
// Inside a worker, every call of a [Model] and of a [Tool] (and so of a
// [ToolChain], and of the tools of an agent wrapped with Tool) is a step
// of the task, recorded as flow.Step records one: once the call returns,
// its answer is kept with the task, and a later attempt of the task (a
// retry after an error, or a run after its worker died) that makes the
// same call gets the recorded answer back instead of paying for the call
// again. A replayed call logs "Language model: answer replayed from
// attempt N" or "Tool X: output replayed from attempt N" in place of its
// usual entries (a replayed tool adds no second tool_result; a replayed
// answer is not streamed again); the named steps around the calls log
// their start and end again, and an agent its actions ("Using tool X
// with input Y"), since their chains run again. A task
// re-queued to resume a dead task (queue.RequeueOptions.Resume) replays
// the dead task's calls too, logging "replayed from task <id>" instead.
//
// Whether a call is the same is decided by its key: the kind of call
// (model or tool), a hash of what decides its answer, and its order among
// the calls of the run with that same hash. The hash covers the name of
// the innermost Step and, for a model, the messages and the call options
// (model, temperature, tools...); for a tool, its name and input. The
// model a provider was built with is not a call option: a worker
// configured with another model replays the answers of the first, unless
// the model is named per call (llms.WithModel). So:
//
//   - a call whose prompt changed between attempts (the template was
//     edited, an earlier answer it quotes came out differently, the step
//     was renamed) runs again, rather than replaying an answer to another
//     question;
//   - a call made several times with the same input in one run (an agent
//     that asks the same question twice, samples of one prompt) replays
//     the answers in the order they came;
//   - a call that failed and is tried again in the run (a retry loop of
//     the flow's own) keeps its place: a failed call is not counted, so
//     a later attempt replays the try that succeeded;
//   - calls added to the code run, and records of calls that are gone are
//     ignored; nothing needs naming by hand.
//
// A failed call is not recorded. Calls through a provider given
// [Callbacks] but not wrapped with Model, and tools not wrapped with
// Tool, are reported but not recorded. Each recorded call costs the
// checkpoint store one write of its answer (on Redis one round trip,
// about 400 bytes plus the answer), and an attempt after the first one
// read at its first call. Outside a worker (a Task without
// Checkpoints) nothing is recorded.
//
// # Refusals are not retried
//
// A task whose flow fails is retried (3 attempts by default, with a
// backoff), unless its error wraps flow.ErrPermanent. A provider that
// refuses a request for a reason no retry can fix (a wrong or missing
// key, an unknown model, a prompt too long for the model) would refuse
// every attempt, so lcflow marks its refusals: the errors that a Flow's
// chain, a Model and a Tool return go through [PermanentIfRefused],
// which wraps flow.ErrPermanent around an HTTP answer of 400, 401, 403,
// 404 or 422 as langchaingo's providers quote it ("API returned
// unexpected status code: 401: ...", the openai provider's text, also
// for Gemini's OpenAI-compatible endpoint) and around an llms.Error of
// the matching codes. The task then fails at its first attempt, its
// status the error unchanged:
//
//	Choosing a theme: API returned unexpected status code: 401: Incorrect API key provided: ...
//
// Rate limits (429), other client answers (408, 409), server errors
// (5xx), timeouts and network errors stay retryable, and so do errors
// whose text quotes no status (the ollama provider's). A flow in plain
// Go that calls a model not wrapped with Model applies
// PermanentIfRefused to its own errors. The tavily tool marks its own
// refusals (no key, a key refused).
//
// # Tracing
//
// Inside a traced run of a task (a worker with an OpenTelemetry tracer
// provider, see queue.WorkerConfig.TracerProvider), each Step is a span
// "step <name>", each call of a Tool or ToolChain a span "execute_tool
// <tool>" and each call of a Model a span "chat <model>", children of the
// innermost step, with an error status when they fail (its text
// redacted, see below). They use the tracer
// provider of the run's span; outside a traced run they cost nothing.
//
// The tool and model spans follow OpenTelemetry's semantic conventions
// for generative AI, with what langchaingo tells of a call. A tool call
// is an INTERNAL span with gen_ai.operation.name "execute_tool" and
// gen_ai.tool.name. A model call is a CLIENT span with
// gen_ai.operation.name "chat"; gen_ai.request.model and the model in the
// span's name when its call options name the model (llms.WithModel, or
// chains.WithModel in Flow.CallOptions) or DescribedModel does, otherwise
// the span is "chat" alone, as langchaingo's llms.Model does not tell the
// model its client was made with; gen_ai.provider.name (formerly
// gen_ai.system) when DescribedModel names the provider, as nothing in
// llms.Model says which provider a model calls and a guess from its Go
// type would be wrong for an OpenAI-compatible server or a wrapped model;
// gen_ai.request.stream when the call streams (every call a Flow's chains
// make does); and gen_ai.usage.input_tokens and
// gen_ai.usage.output_tokens when the answer carries its token counts
// (most providers put them in each choice's GenerationInfo, under names
// of their own, which the span reads).
//
// The error texts on those spans go through the same redaction as the
// task's status: the password of a URL, secret query parameters and
// Bearer or Basic credentials are masked, since the errors of HTTP
// clients quote the URLs they called.
package lcflow
