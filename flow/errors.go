package flow

import (
	"errors"
	"time"
)

// ErrPermanent marks a flow error that running the task again cannot fix:
// a worker that sees it (errors.Is) fails the task at once instead of
// retrying it. Wrap an error with Permanent to mark it.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that errors.Is(e, ErrPermanent) is true while
// errors.Is and errors.As still find err and its causes. The message is
// err's own. Permanent(nil) is nil.
//
//	if resp.StatusCode == http.StatusUnauthorized {
//		return nil, flow.Permanent(fmt.Errorf("search API refused the key: %s", resp.Status))
//	}
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// RetryAfter wraps err so that a worker that retries the task waits at
// least d before the next attempt, even when its backoff is shorter: for
// a flow that was told when to come back (an HTTP 429 or 503 with
// Retry-After). The message is err's own, and errors.Is and errors.As
// still find err and its causes. It does not make a permanent error
// retryable, nor give the task more attempts. RetryAfter(nil, d) is nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfterError{err: err, after: max(d, 0)}
}

// RetryDelay returns the delay asked for by RetryAfter in err's chain
// (the first found, as errors.As finds it), and whether there is one.
func RetryDelay(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }

func (e *retryAfterError) Unwrap() error { return e.err }
