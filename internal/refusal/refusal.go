// Package refusal tells the HTTP statuses with which an API refuses a
// request that it would refuse again if sent unchanged, for the clients
// of model and search providers (flow/lcflow, flow/lcflow/tavily) that
// mark such a failure permanent (flow.ErrPermanent) instead of retrying
// it.
package refusal

import "net/http"

// Status reports whether code is such a status: 400 Bad Request, 401
// Unauthorized, 403 Forbidden, 404 Not Found or 422 Unprocessable
// Entity. A 408, a 409, a 429 or a 5xx is worth another attempt.
func Status(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
		http.StatusNotFound, http.StatusUnprocessableEntity:
		return true
	}
	return false
}
