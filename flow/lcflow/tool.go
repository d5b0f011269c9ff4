package lcflow

import (
	"context"
	"fmt"

	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/schema"
	"github.com/tmc/langchaingo/tools"
)

// Tool wraps t so that every call is reported to the running task's
// Handler: "Using tool <name> with input <input>" (unless an agent action
// just announced it), then a tool_result carrying the output under the
// innermost step's name, or a log entry when the tool fails. langchaingo
// does not tell a callbacks handler which tool ended; the wrapper does, so
// wrap the tools you hand to agents or call from your own chains.
//
// Callbacks that t makes to its own handler are not reported a second
// time. Outside a Flow the wrapper only calls t.
//
// Inside a Flow each call is a step of the task: its output is recorded,
// and a later attempt of the task that makes the same call (same tool,
// same input, in the same step) gets that output back without calling
// t, and logs "Tool <name>: output replayed from attempt N" in place of
// the call and its tool_result, which the earlier attempt reported. A
// failed call is not recorded.
//
// An error of t that is a refusal (an HTTP API answering 401, say: see
// PermanentIfRefused) comes out wrapping flow.ErrPermanent, so that the
// task fails at once instead of retrying.
func Tool(t tools.Tool) tools.Tool {
	if t == nil {
		panic("lcflow.Tool: nil tool")
	}
	if rt, ok := t.(reportingTool); ok {
		return rt
	}
	return reportingTool{t: t}
}

type reportingTool struct{ t tools.Tool }

func (r reportingTool) Name() string        { return r.t.Name() }
func (r reportingTool) Description() string { return r.t.Description() }

func (r reportingTool) Call(ctx context.Context, input string) (string, error) {
	h := HandlerFromContext(ctx)
	if h == nil {
		out, err := r.t.Call(ctx, input)
		return out, PermanentIfRefused(err)
	}
	name := r.t.Name()
	key := h.toolKey(ctx, name, input)
	var recorded string
	from, ok, err := h.replayed(ctx, key, &recorded)
	if err != nil {
		h.releaseKey(key)
		return "", fmt.Errorf("lcflow: tool %s: %w", name, err)
	}
	if ok {
		h.toolReplayed(ctx, name, from)
		return recorded, nil
	}
	h.toolStarted(ctx, name, input)
	sctx, span := startSpan(ctx, "execute_tool ", name, attrOperation.String("execute_tool"), attrTool.String(name))
	ended := false
	defer endUnlessEnded(span, &ended)
	out, err := r.t.Call(markToolReported(sctx), input)
	endSpan(span, err)
	ended = true
	if err != nil {
		h.releaseKey(key) // a try again in this run takes its place
		h.toolFailed(ctx, name, err)
		return out, PermanentIfRefused(err)
	}
	h.toolEnded(ctx, name, out)
	if key != "" {
		// After the tool_result, so that a replay finds it reported.
		_ = h.cps.Record(ctx, key, out) // a string always encodes
	}
	return out, nil
}

// ToolChain returns a chain that calls t with the value of inputKey (a
// string; other values are formatted with fmt.Sprint) and returns the
// tool's output under outputKey. The call is reported as by Tool. Wrap it
// in a Step to name the step the tool result belongs to:
//
//	search := lcflow.Step("Searching the web", lcflow.ToolChain(tavily.New(tavily.Config{}), "question", "results"))
func ToolChain(t tools.Tool, inputKey, outputKey string) chains.Chain {
	if inputKey == "" || outputKey == "" {
		panic("lcflow.ToolChain: empty input or output key")
	}
	return &toolChain{tool: Tool(t), in: inputKey, out: outputKey}
}

type toolChain struct {
	tool    tools.Tool
	in, out string
}

func (c *toolChain) Call(ctx context.Context, inputs map[string]any, _ ...chains.ChainCallOption) (map[string]any, error) {
	v, ok := inputs[c.in]
	if !ok {
		return nil, fmt.Errorf("%w: %w: %v", chains.ErrInvalidInputValues, chains.ErrMissingInputValues, c.in)
	}
	input, ok := v.(string)
	if !ok {
		input = fmt.Sprint(v)
	}
	out, err := c.tool.Call(ctx, input)
	if err != nil {
		return nil, fmt.Errorf("tool %s: %w", c.tool.Name(), err)
	}
	return map[string]any{c.out: out}, nil
}

func (c *toolChain) GetMemory() schema.Memory { return noMemory{} }
func (c *toolChain) GetInputKeys() []string   { return []string{c.in} }
func (c *toolChain) GetOutputKeys() []string  { return []string{c.out} }
