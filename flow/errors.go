package flow

import "errors"

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
