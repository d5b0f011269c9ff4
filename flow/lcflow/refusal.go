package lcflow

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tmc/langchaingo/llms"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/refusal"
)

// statusText is how langchaingo's HTTP providers (openai, anthropic,
// ernie, huggingface) report an answer other than 200: a plain error
// whose text is "API returned unexpected status code: 401: <message>".
const statusText = "unexpected status code: "

// PermanentIfRefused returns err marked with flow.ErrPermanent (see
// flow.Permanent) when it is a refusal that running the task again cannot
// fix, and err unchanged otherwise. The message is err's own, and
// errors.Is and errors.As still find err and its causes. A worker fails a
// task whose flow returns a marked error at once, instead of retrying it.
//
// A refusal is:
//
//   - an llms.Error whose code is authentication, invalid_request,
//     resource_not_found, content_filter, token_limit or not_implemented
//     (a wrong key, a malformed request, an unknown model, a blocked
//     prompt, a prompt too long for the model);
//   - an error of a langchaingo provider that quotes an HTTP status of
//     400, 401, 403, 404 or 422 ("API returned unexpected status code:
//     401: ...", as the openai provider, and so Gemini's OpenAI-compatible
//     endpoint, the anthropic provider and others report one: they return
//     plain errors, not llms.Error).
//
// Everything else stays retryable: 408, 409, 429 and 5xx answers, an
// llms.Error of another code (rate_limit, quota_exceeded, timeout,
// provider_unavailable...), timeouts, network errors, a cancelled
// context, and errors lcflow cannot read (the ollama provider's, whose
// text holds no status code). An error that already wraps
// flow.ErrPermanent is returned as it is. PermanentIfRefused(nil) is nil.
//
// Flow.Run, Model and Tool apply it to the errors of the chains, model
// calls and tool calls they run, so an lcflow flow needs nothing more. A
// flow written in plain Go that calls a model or a chain itself applies
// it to the errors it returns:
//
//	out, err := chains.Run(ctx, summarise, text, chains.WithCallback(h))
//	if err != nil {
//		return nil, lcflow.PermanentIfRefused(err)
//	}
func PermanentIfRefused(err error) error {
	if err == nil || errors.Is(err, flow.ErrPermanent) || !refused(err) {
		return err
	}
	return flow.Permanent(err)
}

// refused tells whether err is a refusal (see PermanentIfRefused).
func refused(err error) bool {
	var le *llms.Error
	if errors.As(err, &le) {
		switch le.Code {
		case llms.ErrCodeAuthentication, llms.ErrCodeInvalidRequest, llms.ErrCodeResourceNotFound,
			llms.ErrCodeContentFilter, llms.ErrCodeTokenLimit, llms.ErrCodeNotImplemented:
			return true
		case llms.ErrCodeUnknown, "":
			// The code says nothing: the status its cause quotes
			// decides (an llms.Error's text leaves its cause out).
			if le.Cause != nil && refused(le.Cause) {
				return true
			}
		default:
			return false
		}
	}
	code, ok := quotedStatus(err.Error())
	return ok && refusal.Status(code)
}

// quotedStatus returns the HTTP status quoted in msg as statusText
// quotes it, and whether there is one.
func quotedStatus(msg string) (int, bool) {
	_, after, ok := strings.Cut(msg, statusText)
	if !ok || len(after) < 3 || len(after) > 3 && after[3] >= '0' && after[3] <= '9' {
		return 0, false
	}
	code, err := strconv.Atoi(after[:3])
	if err != nil {
		return 0, false
	}
	return code, true
}
