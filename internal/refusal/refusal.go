// Package refusal tells the HTTP statuses with which an API refuses a
// request that it would refuse again if sent unchanged, for the clients
// of model and search providers (flow/lcflow, flow/lcflow/tavily) that
// mark such a failure permanent (flow.ErrPermanent) instead of retrying
// it, and the statuses that are worth another attempt, for the webhooks
// of notify, which retry those only.
package refusal

import "net/http"

// Status reports whether code is such a status: 400 Bad Request, 401
// Unauthorized, 403 Forbidden, 404 Not Found or 422 Unprocessable
// Entity. A Transient status is worth another attempt.
func Status(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
		http.StatusNotFound, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// Transient reports whether code says that the same request may succeed
// later: 408 Request Timeout (the server gave up waiting for it), 409
// Conflict (the target's state is changing, such as a receiver still
// handling an earlier delivery of the same message), 429 Too Many
// Requests or a 5xx. No Transient status is a Status.
func Transient(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return true
	}
	return code >= 500 && code <= 599
}
