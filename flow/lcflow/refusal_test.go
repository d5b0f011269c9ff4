package lcflow_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
)

// providerStatus is the error langchaingo's openai provider returns for
// an answer other than 200 (a plain error, not an llms.Error).
func providerStatus(code int, msg string) error {
	return fmt.Errorf("API returned unexpected status code: %d: %s", code, msg)
}

func TestPermanentIfRefused(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"400 invalid request", providerStatus(400, "This model's maximum context length is 128000 tokens."), true},
		{"401 wrong key", providerStatus(401, "Incorrect API key provided: sk-wrong."), true},
		{"403 forbidden", providerStatus(403, "Project does not have access to model gpt-5"), true},
		{"404 unknown model", providerStatus(404, "The model `gpt-9` does not exist"), true},
		{"422 unprocessable", providerStatus(422, "invalid"), true},
		{"a status without a body", errors.New("API returned unexpected status code: 401"), true},
		{"inside a step's error", fmt.Errorf("Writing the poem: %w", providerStatus(401, "bad key")), true},
		{"quoted with %v by a chain", fmt.Errorf("agent: %v", providerStatus(404, "no model")), true},
		{"huggingface's wording", errors.New("unexpected status code: 403, body: forbidden"), true},
		{"408", providerStatus(408, "timeout"), false},
		{"409", providerStatus(409, "conflict"), false},
		{"429 rate limit", providerStatus(429, "Rate limit reached for gpt-4o-mini"), false},
		{"500", providerStatus(500, "The server had an error"), false},
		{"502 without a body", errors.New("API returned unexpected status code: 502"), false},
		{"503", providerStatus(503, "overloaded"), false},
		{"not three digits", errors.New("API returned unexpected status code: 4011"), false},
		{"network error", errors.New("network error: failed to reach API server"), false},
		{"provider's timeout", errors.New("request timeout: API call exceeded deadline"), false},
		{"deadline", context.DeadlineExceeded, false},
		{"cancelled", fmt.Errorf("step: %w", context.Canceled), false},
		{"unknown error", errors.New("quota exceeded"), false},
		{"a status in free text", errors.New("the search said 401"), false},
		{"llms authentication", llms.NewError(llms.ErrCodeAuthentication, "openai", "Invalid or missing API key"), true},
		{"llms invalid request", llms.NewError(llms.ErrCodeInvalidRequest, "openai", "bad"), true},
		{"llms resource not found", llms.NewError(llms.ErrCodeResourceNotFound, "openai", "Model not found"), true},
		{"llms content filter", llms.NewError(llms.ErrCodeContentFilter, "googleai", "SAFETY"), true},
		{"llms token limit", llms.NewError(llms.ErrCodeTokenLimit, "openai", "Context length exceeded"), true},
		{"llms not implemented", llms.NewError(llms.ErrCodeNotImplemented, "ollama", "tools"), true},
		{"llms rate limit", llms.NewError(llms.ErrCodeRateLimit, "openai", "Rate limit exceeded"), false},
		{"llms quota", llms.NewError(llms.ErrCodeQuotaExceeded, "openai", "API quota exceeded"), false},
		{"llms unavailable", llms.NewError(llms.ErrCodeProviderUnavailable, "openai", "down"), false},
		{"llms timeout", llms.NewError(llms.ErrCodeTimeout, "openai", "slow"), false},
		{"llms code decides over the text", llms.NewError(llms.ErrCodeRateLimit, "openai", "r").WithCause(providerStatus(400, "x")), false},
		{"llms unknown code: the text decides", llms.NewError(llms.ErrCodeUnknown, "openai", "?").WithCause(providerStatus(401, "x")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lcflow.PermanentIfRefused(tt.err)
			assert.Equal(t, tt.permanent, errors.Is(got, flow.ErrPermanent))
			assert.ErrorIs(t, got, tt.err, "the original error is kept")
			assert.Equal(t, tt.err.Error(), got.Error(), "the message is unchanged")
			if !tt.permanent {
				assert.True(t, got == tt.err, "a retryable error is returned as it is")
			}
		})
	}

	assert.NoError(t, lcflow.PermanentIfRefused(nil))
	marked := flow.Permanent(errors.New("already"))
	assert.Same(t, marked, lcflow.PermanentIfRefused(marked), "an error marked already is returned as it is")
	var le *llms.Error
	assert.ErrorAs(t, lcflow.PermanentIfRefused(llms.NewError(llms.ErrCodeAuthentication, "openai", "k")), &le, "errors.As still finds the llms.Error")
	assert.True(t, llms.IsAuthenticationError(lcflow.PermanentIfRefused(le)))
}

// TestRefusedModelCallFailsTheFlowForGood checks that a refusal comes out
// of a Flow marked permanent, whether the model is wrapped with Model or
// not, and that an outage does not.
func TestRefusedModelCallFailsTheFlowForGood(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wrap      bool
		permanent bool
	}{
		{"401 through Model", providerStatus(401, "Incorrect API key provided"), true, true},
		{"401 from a model not wrapped", providerStatus(401, "Incorrect API key provided"), false, true},
		{"503 through Model", providerStatus(503, "overloaded"), true, false},
		{"503 from a model not wrapped", providerStatus(503, "overloaded"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var model llms.Model = failingModel{tt.err}
			if tt.wrap {
				model = lcflow.Model(model)
			}
			f := lcflow.Chain(lcflow.Step("Writing the poem", llmChain(model, "poem", nil, "")))
			res, err, rec := runFlow(t, f, `{}`)
			assert.Nil(t, res)
			require.ErrorIs(t, err, tt.err)
			assert.Equal(t, tt.permanent, errors.Is(err, flow.ErrPermanent))
			assert.Equal(t, "Writing the poem: "+tt.err.Error(), err.Error())
			assert.Contains(t, stepLines(rec.Snapshot()), "log: Writing the poem: failed: "+tt.err.Error())
		})
	}
}

// TestModelMarksRefusalsForPlainGo checks that a plain Go flow calling a
// model wrapped with Model gets a refusal marked, inside a task and
// outside one.
func TestModelMarksRefusalsForPlainGo(t *testing.T) {
	refusal := providerStatus(403, "forbidden")
	model := lcflow.Model(failingModel{refusal})

	_, err := llms.GenerateFromSinglePrompt(t.Context(), model, "hi")
	require.ErrorIs(t, err, refusal)
	assert.ErrorIs(t, err, flow.ErrPermanent, "outside a task")

	f := flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
		h := lcflow.TaskHandler(task)
		return chains.Call(lcflow.WithHandler(ctx, h), llmChain(model, "poem", nil, ""), map[string]any{}, chains.WithCallback(h))
	})
	_, err, _ = runFlow(t, f, `{}`)
	require.ErrorIs(t, err, refusal)
	assert.ErrorIs(t, err, flow.ErrPermanent, "inside a task")
}

// refusingTool counts its calls and fails each with err.
type refusingTool struct {
	err   error
	calls *atomic.Int32
}

func (r refusingTool) Name() string        { return "lookup" }
func (r refusingTool) Description() string { return "test tool" }
func (r refusingTool) Call(context.Context, string) (string, error) {
	r.calls.Add(1)
	return "", r.err
}

func TestRefusedToolCallFailsTheFlowForGood(t *testing.T) {
	for _, tt := range []struct {
		err       error
		permanent bool
	}{
		{providerStatus(401, "bad key"), true},
		{providerStatus(429, "slow down"), false},
		{errors.New("connection reset by peer"), false},
	} {
		t.Run(tt.err.Error(), func(t *testing.T) {
			var calls atomic.Int32
			f := lcflow.Chain(lcflow.Step("Looking up", lcflow.ToolChain(refusingTool{tt.err, &calls}, "q", "out")))
			_, err, _ := runFlow(t, f, `{"q": "x"}`)
			require.ErrorIs(t, err, tt.err)
			assert.Equal(t, tt.permanent, errors.Is(err, flow.ErrPermanent))
			assert.True(t, strings.HasPrefix(err.Error(), "Looking up: tool lookup: "), "%v", err)
			assert.Equal(t, int32(1), calls.Load())

			_, err = lcflow.Tool(refusingTool{tt.err, &calls}).Call(t.Context(), "x")
			assert.Equal(t, tt.permanent, errors.Is(err, flow.ErrPermanent), "a tool called outside a task")
		})
	}
}
