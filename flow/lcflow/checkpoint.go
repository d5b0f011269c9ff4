package lcflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tmc/langchaingo/llms"

	"github.com/flowsrun/flows/flow"
)

// Every call of a Model or a Tool inside a Flow is a step of the task
// (see flow.Step): once it returns, its answer is recorded, and a later
// attempt of the task that makes the same call gets the recorded answer
// instead of calling the model or the tool again.
//
// A call's key is "lcflow/<kind>/<hash>/<n>": kind is "llm" or "tool";
// hash is the first 12 bytes, in hex, of the SHA-256 of what decides the
// answer (the innermost step's name and, for a model, its messages and
// call options as JSON, for a tool, its name and input); n is the place
// of the call among the calls of the run with that kind and hash, from
// 0: the lowest that no other call of the run holds, a call holding its
// place while it runs and after it succeeds, and giving it back when it
// fails. So the same call repeated in a run (an agent that asks the same
// question twice) gets the answers in the order they came; a call that
// failed and is tried again in the run (a flow's own retry loop) keeps
// its place, and a later attempt replays the answer of the try that
// succeeded; and a call whose input changed between attempts (the prompt
// or an earlier answer it quotes was edited, a step renamed) has another
// key and runs.

// checkpointKey returns the key of the next call of kind whose input is
// parts, holding its place until releaseKey gives it back.
func (h *Handler) checkpointKey(kind string, parts ...[]byte) string {
	sum := sha256.New()
	for _, p := range parts {
		sum.Write(p)
		sum.Write([]byte{0})
	}
	base := "lcflow/" + kind + "/" + hex.EncodeToString(sum.Sum(nil)[:12])
	h.mu.Lock()
	held := h.calls[base]
	n := 0
	for n < len(held) && held[n] {
		n++
	}
	if n == len(held) {
		held = append(held, true)
	} else {
		held[n] = true
	}
	h.calls[base] = held
	h.mu.Unlock()
	return base + "/" + strconv.Itoa(n)
}

// releaseKey gives back the place of key, whose call failed, to the next
// call with its hash. An empty key (nothing recorded) is ignored.
func (h *Handler) releaseKey(key string) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return
	}
	n, err := strconv.Atoi(key[i+1:])
	if err != nil {
		return
	}
	h.mu.Lock()
	if held := h.calls[key[:i]]; n < len(held) {
		held[n] = false
	}
	h.mu.Unlock()
}

// modelKey returns the key of a model call, or "" when h records nothing
// or the call's input has no JSON form.
func (h *Handler) modelKey(ctx context.Context, messages []llms.MessageContent, options []llms.CallOption) string {
	if h.cps == nil {
		return ""
	}
	var opts llms.CallOptions
	for _, o := range options {
		o(&opts)
	}
	msgs, err := json.Marshal(messages)
	if err != nil {
		return ""
	}
	o, err := json.Marshal(opts)
	if err != nil {
		return ""
	}
	return h.checkpointKey("llm", []byte(stepFromContext(ctx)), msgs, o)
}

// toolKey returns the key of a call of tool with input, or "" when h
// records nothing.
func (h *Handler) toolKey(ctx context.Context, tool, input string) string {
	if h.cps == nil {
		return ""
	}
	return h.checkpointKey("tool", []byte(stepFromContext(ctx)), []byte(tool), []byte(input))
}

// recordModel records resp as the answer of the model call key. An answer
// whose GenerationInfo (the provider's extras) has no JSON form is
// recorded without it.
func (h *Handler) recordModel(ctx context.Context, key string, resp *llms.ContentResponse) {
	if key == "" || resp == nil {
		return
	}
	if h.cps.Record(ctx, key, resp) == nil {
		return
	}
	bare := &llms.ContentResponse{Choices: make([]*llms.ContentChoice, len(resp.Choices))}
	for i, c := range resp.Choices {
		if c != nil {
			cc := *c
			cc.GenerationInfo = nil
			bare.Choices[i] = &cc
		}
	}
	_ = h.cps.Record(ctx, key, bare) // still unencodable: the call is not recorded
}

// replayed reports whether key was recorded by an earlier attempt (or by
// the dead task the task resumes), with its output decoded into out, and
// which run recorded it.
func (h *Handler) replayed(ctx context.Context, key string, out any) (flow.Origin, bool, error) {
	if key == "" {
		return flow.Origin{}, false, nil
	}
	return h.cps.ReplayOrigin(ctx, key, out)
}

// TaskHandler returns a Handler reporting to t.Progress that records the
// task's model and tool calls in t.Checkpoints and replays those an
// earlier attempt recorded (see Model and Tool). Flow.Run uses it; a flow
// written in plain Go that runs chains itself does too:
//
//	ctx = lcflow.WithHandler(ctx, lcflow.TaskHandler(t))
func TaskHandler(t *flow.Task) *Handler {
	h := NewHandler(t.Progress)
	h.cps = t.Checkpoints
	return h
}
