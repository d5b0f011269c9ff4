package lcflow

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tmc/langchaingo/callbacks"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/schema"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/text"
	"github.com/flowsrun/flows/progress"
)

// maxProgress is the highest percentage a Handler reports: 100 belongs to
// the worker, which reports it with the task's SUCCESS.
const maxProgress = 99

// maxInputLen bounds the tool inputs quoted in log entries.
const maxInputLen = 200

// unknownTool names a tool whose name no callback told.
const unknownTool = "tool"

// Handler is the langchaingo callbacks.Handler of one task: it turns what
// chains, models, tools and agents report into progress events of the
// task's progress.Reporter.
//
//   - A named step (see Step) sets the status line to its name, logs
//     "<name>: started" and "<name>: done" (or "<name>: failed: <error>"),
//     and moves the progress bar a tenth of the remaining way as it
//     starts and half of it when done.
//   - A model call (reported by Model, or by a provider given Callbacks)
//     logs "Calling the language model"; its end moves the progress bar a
//     quarter of the remaining way. Every streamed chunk becomes a
//     Reporter.Token, except in a Quiet step (chunks split inside a UTF-8
//     sequence are joined first).
//   - An agent action, or a call of a tool wrapped by Tool (or made by
//     ToolChain) that no agent action announced, logs "Using tool X with
//     input Y". The tool's end appends a tool_result whose step_name is
//     the innermost named step (the tool's name outside any step), whose
//     tool is the tool's name (taken from Tool, or from the agent action,
//     since langchaingo's tool callbacks carry none) and whose data is the
//     tool's output, parsed when it is JSON and a JSON string otherwise
//     (see ToolData); it also moves the progress bar a quarter of the
//     remaining way.
//   - An agent finish logs "Agent finished" ("Agent stopped before
//     finishing" when the executor ran out of iterations); retrievers log
//     their query and how many documents they found; a failing tool is
//     logged; model, chain and tool errors replace the status line. The
//     flow returns the error, which becomes the task's failure reason.
//   - Unnamed chains are not reported: langchaingo gives them no names.
//
// The progress percentage only grows and stays below 100: the worker
// reports 100 with the task's SUCCESS.
//
// A Handler belongs to one task: Flow.Run makes one per run and carries it
// in the context, where Step, Tool, Model and Callbacks find it. Its
// methods are safe for concurrent use (a chain may call a model from
// several goroutines), and nothing in it is shared with other tasks.
type Handler struct {
	r progress.Reporter

	mu      sync.Mutex
	percent int
	// pendingTool holds, per step name, the tool an agent action announced
	// and whose end has not been reported yet.
	pendingTool map[string]string
	// carry holds the start of a UTF-8 sequence split across stream chunks.
	carry []byte
	// cps records the task's model and tool calls (nil: none are, see
	// TaskHandler), and calls holds, for each checkpoint key less its
	// place, the places that calls of the run hold (see checkpointKey).
	cps   *flow.Checkpoints
	calls map[string][]bool
}

var _ callbacks.Handler = (*Handler)(nil)

// NewHandler returns a Handler reporting to r. A nil r reports nothing.
// It records no model or tool call: in a flow, use TaskHandler, whose
// calls a later attempt of the task replays.
func NewHandler(r progress.Reporter) *Handler {
	if r == nil {
		r = progress.Discard
	}
	return &Handler{r: r, pendingTool: map[string]string{}, calls: map[string][]bool{}}
}

// Reporter returns the reporter h reports to, for chains of your own that
// report more than the callbacks do. A nil Handler (outside a task)
// returns progress.Discard.
func (h *Handler) Reporter() progress.Reporter {
	if h == nil {
		return progress.Discard
	}
	return h.r
}

// advance moves the percentage num/den of the remaining way to maxProgress,
// by at least one point, and reports it with status (which may be empty).
// It never goes back; at maxProgress it reports only a non-empty status.
func (h *Handler) advance(num, den int, status string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.percent >= maxProgress {
		if status != "" {
			h.r.Status(status)
		}
		return
	}
	step := max((maxProgress-h.percent)*num/den, 1)
	h.percent = min(h.percent+step, maxProgress)
	h.r.Progress(h.percent, status)
}

// Percent returns the percentage h last reported.
func (h *Handler) Percent() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.percent
}

func (h *Handler) stepStarted(name string) {
	// A small move at the start shows a long first step (a search, a slow
	// model) as under way rather than stuck at 0%.
	h.advance(1, 10, name)
	h.r.Log(name + ": started")
}

func (h *Handler) stepDone(name string) {
	h.flushTokens()
	h.r.Log(name + ": done")
	h.advance(1, 2, "")
}

func (h *Handler) stepFailed(name string, err error) {
	h.flushTokens()
	h.r.Log(fmt.Sprintf("%s: failed: %v", name, err))
}

func (h *Handler) llmStarted() {
	h.r.Log("Calling the language model")
}

func (h *Handler) llmEnded() {
	h.flushTokens()
	h.advance(1, 4, "")
}

// llmReplayed reports a model call answered from the record of an
// earlier attempt (or of the dead task the task resumes), in place of its
// start and end.
func (h *Handler) llmReplayed(from flow.Origin) {
	h.r.Log("Language model: answer replayed from " + from.String())
	h.advance(1, 4, "")
}

// toolStarted logs a tool call unless an agent action already announced it.
func (h *Handler) toolStarted(ctx context.Context, tool, input string) {
	step := stepFromContext(ctx)
	h.mu.Lock()
	// The executor finds tools by name regardless of case.
	announced := strings.EqualFold(h.pendingTool[step], tool)
	h.mu.Unlock()
	if !announced {
		h.r.Log(fmt.Sprintf("Using tool %s with input %s", tool, quoteInput(input)))
	}
}

// toolEnded appends the tool_result of tool; an empty tool means the one
// the last agent action of the step announced.
func (h *Handler) toolEnded(ctx context.Context, tool, output string) {
	step := stepFromContext(ctx)
	h.mu.Lock()
	if tool == "" {
		tool = h.pendingTool[step]
	}
	delete(h.pendingTool, step)
	h.mu.Unlock()
	if tool == "" {
		tool = unknownTool
	}
	if step == "" {
		step = tool
	}
	h.r.ToolResult(step, tool, ToolData(output))
	h.advance(1, 4, "")
}

// toolReplayed reports a tool call answered from the record of an
// earlier attempt (or of the dead task the task resumes), in place of its
// start and its tool_result, which that attempt reported.
func (h *Handler) toolReplayed(ctx context.Context, tool string, from flow.Origin) {
	step := stepFromContext(ctx)
	h.mu.Lock()
	delete(h.pendingTool, step)
	h.mu.Unlock()
	h.r.Log(fmt.Sprintf("Tool %s: output replayed from %s", tool, from))
	h.advance(1, 4, "")
}

func (h *Handler) toolFailed(ctx context.Context, tool string, err error) {
	step := stepFromContext(ctx)
	h.mu.Lock()
	if tool == "" {
		tool = h.pendingTool[step]
	}
	delete(h.pendingTool, step)
	h.mu.Unlock()
	if tool == "" {
		tool = unknownTool
	}
	msg := fmt.Sprintf("Tool %s failed: %v", tool, err)
	h.r.Log(msg)
	h.r.Status(msg)
}

// token reports a streamed chunk, holding back an incomplete UTF-8
// sequence at its end until the next chunk completes it.
func (h *Handler) token(chunk []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	buf := append(h.carry, chunk...)
	cut := completeUTF8(buf)
	text := string(buf[:cut])
	h.carry = append([]byte(nil), buf[cut:]...)
	if text != "" {
		h.r.Token(text)
	}
}

// flushTokens reports whatever a stream left held back.
func (h *Handler) flushTokens() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.carry) > 0 {
		h.r.Token(string(h.carry))
		h.carry = nil
	}
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside a UTF-8 sequence that later bytes could complete.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

// ToolData returns a tool's output as it goes into a tool_result: the
// output itself (compacted) when it is valid JSON, otherwise the output as a
// JSON string.
func ToolData(output string) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(output)); err == nil && buf.Len() > 0 {
		return buf.Bytes()
	}
	b, _ := json.Marshal(output) // marshalling a string cannot fail
	return b
}

func quoteInput(input string) string {
	input = strings.TrimSpace(strings.TrimSuffix(input, "\nObservation:"))
	if len(input) > maxInputLen {
		input = text.Clip(input, maxInputLen) + "…"
	}
	return fmt.Sprintf("%q", input)
}

// HandleText does nothing: free text has no place in the step results.
func (h *Handler) HandleText(context.Context, string) {}

// HandleLLMStart logs a model call, as HandleLLMGenerateContentStart does.
func (h *Handler) HandleLLMStart(ctx context.Context, _ []string) {
	if h == nil || modelReported(ctx) {
		return
	}
	h.llmStarted()
}

// HandleLLMGenerateContentStart logs "Calling the language model", unless
// the model is wrapped with Model, which reports the call itself.
func (h *Handler) HandleLLMGenerateContentStart(ctx context.Context, _ []llms.MessageContent) {
	if h == nil || modelReported(ctx) {
		return
	}
	h.llmStarted()
}

// HandleLLMGenerateContentEnd moves the progress a quarter of the remaining
// way, unless the model is wrapped with Model, which reports it itself.
func (h *Handler) HandleLLMGenerateContentEnd(ctx context.Context, _ *llms.ContentResponse) {
	if h == nil || modelReported(ctx) {
		return
	}
	h.llmEnded()
}

// HandleLLMError puts the model's error in the status line.
func (h *Handler) HandleLLMError(ctx context.Context, err error) {
	if h == nil || modelReported(ctx) {
		return
	}
	h.r.Status("Language model failed: " + err.Error())
}

// HandleChainStart does nothing: langchaingo chains carry no names, so only
// the steps named with Step are reported.
func (h *Handler) HandleChainStart(context.Context, map[string]any) {}

// HandleChainEnd does nothing, as HandleChainStart.
func (h *Handler) HandleChainEnd(context.Context, map[string]any) {}

// HandleChainError puts the chain's error in the status line.
func (h *Handler) HandleChainError(_ context.Context, err error) {
	if h == nil {
		return
	}
	h.r.Status("Chain failed: " + err.Error())
}

// HandleToolStart does nothing: the agent action that leads to a tool call
// is logged, and a tool wrapped with Tool logs its own start.
func (h *Handler) HandleToolStart(context.Context, string) {}

// HandleToolEnd appends a tool_result for a tool that reports to its own
// callbacks handler (such as tools.Calculator with Callbacks as its
// handler). The tool is named by the last agent action of the step, since
// langchaingo does not pass the name; a tool wrapped with Tool is reported
// by the wrapper instead.
func (h *Handler) HandleToolEnd(ctx context.Context, output string) {
	if h == nil || toolReported(ctx) {
		return
	}
	h.toolEnded(ctx, "", output)
}

// HandleToolError logs the failure of a tool and puts it in the status
// line.
func (h *Handler) HandleToolError(ctx context.Context, err error) {
	if h == nil || toolReported(ctx) {
		return
	}
	h.toolFailed(ctx, "", err)
}

// HandleAgentAction logs "Using tool X with input Y" and remembers X as the
// tool whose end comes next in this step.
func (h *Handler) HandleAgentAction(ctx context.Context, action schema.AgentAction) {
	if h == nil {
		return
	}
	step := stepFromContext(ctx)
	h.mu.Lock()
	h.pendingTool[step] = action.Tool
	h.mu.Unlock()
	h.r.Log(fmt.Sprintf("Using tool %s with input %s", action.Tool, quoteInput(action.ToolInput)))
}

// notFinished is the output an agents.Executor reports as its finish when
// it gives up after its last iteration (the text of agents.ErrNotFinished).
const notFinished = "agent not finished before max iterations"

// HandleAgentFinish logs "Agent finished", or "Agent stopped before
// finishing" when the executor ran out of iterations.
func (h *Handler) HandleAgentFinish(_ context.Context, finish schema.AgentFinish) {
	if h == nil {
		return
	}
	h.flushTokens()
	if out, _ := finish.ReturnValues["output"].(string); out == notFinished {
		h.r.Log("Agent stopped before finishing")
		return
	}
	h.r.Log("Agent finished")
}

// HandleRetrieverStart logs the query a retriever runs.
func (h *Handler) HandleRetrieverStart(_ context.Context, query string) {
	if h == nil {
		return
	}
	h.r.Log("Retrieving documents for " + quoteInput(query))
}

// HandleRetrieverEnd logs how many documents a retriever found.
func (h *Handler) HandleRetrieverEnd(_ context.Context, _ string, documents []schema.Document) {
	if h == nil {
		return
	}
	h.r.Log(fmt.Sprintf("Retrieved %d documents", len(documents)))
}

// HandleStreamingFunc reports a chunk of model output as a token, unless
// the step it belongs to is Quiet.
func (h *Handler) HandleStreamingFunc(ctx context.Context, chunk []byte) {
	if h == nil || quietFromContext(ctx) {
		return
	}
	h.token(chunk)
}
