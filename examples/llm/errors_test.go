package llm_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/llms"

	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
)

// TestOpenAIProviderErrors pins down what langchaingo's openai provider
// (OpenAI, Gemini's OpenAI-compatible endpoint) returns when the API
// answers an error, streamed or not: a plain error quoting the status,
// never an llms.Error. lcflow.PermanentIfRefused reads that text, so a
// langchaingo upgrade that changes it fails here first.
func TestOpenAIProviderErrors(t *testing.T) {
	tests := []struct {
		status    int
		permanent bool
	}{
		{400, true}, {401, true}, {403, true}, {404, true}, {422, true},
		{408, false}, {409, false}, {429, false}, {500, false}, {502, false}, {503, false},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d stream=%v", tt.status, stream), func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					_, _ = fmt.Fprintf(w, `{"error": {"message": "refused for test", "type": "invalid_request_error", "code": null}}`)
				}))
				t.Cleanup(srv.Close)
				m, _, err := llm.FromEnv(mapEnv(map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": srv.URL}))
				require.NoError(t, err)
				var opts []llms.CallOption
				if stream {
					opts = append(opts, llms.WithStreamingFunc(func(context.Context, []byte) error { return nil }))
				}

				_, err = llms.GenerateFromSinglePrompt(t.Context(), m, "hi", opts...)
				require.Error(t, err)
				assert.Equal(t, fmt.Sprintf("API returned unexpected status code: %d: refused for test", tt.status), err.Error())
				var le *llms.Error
				assert.False(t, errors.As(err, &le), "the provider returns no llms.Error")
				assert.Equal(t, tt.permanent, errors.Is(lcflow.PermanentIfRefused(err), flow.ErrPermanent))
			})
		}
	}

	t.Run("Gemini's answer to a wrong key", func(t *testing.T) {
		// Gemini's endpoint answers a list, which the provider cannot
		// read: the error quotes the status alone.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprint(w, `[{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}]`)
		}))
		t.Cleanup(srv.Close)
		m, _, err := llm.FromEnv(mapEnv(map[string]string{"GEMINI_API_KEY": "g-key", "GEMINI_BASE_URL": srv.URL}))
		require.NoError(t, err)
		_, err = llms.GenerateFromSinglePrompt(t.Context(), m, "hi")
		require.EqualError(t, err, "API returned unexpected status code: 400")
		assert.ErrorIs(t, lcflow.PermanentIfRefused(err), flow.ErrPermanent)
	})

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close()) // nothing listens there any more
		m, _, err := llm.FromEnv(mapEnv(map[string]string{"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://" + addr}))
		require.NoError(t, err)
		_, err = llms.GenerateFromSinglePrompt(t.Context(), m, "hi")
		require.EqualError(t, err, "network error: failed to reach API server", "the provider hides the cause")
		assert.NotErrorIs(t, lcflow.PermanentIfRefused(err), flow.ErrPermanent)
	})
}
