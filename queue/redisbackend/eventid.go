package redisbackend

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/flowsrun/flows/progress"
)

// eventID is an event id, "<n>-<k>": the k-th event (from 0) of the n-th
// element (from 1) of its task's events list (see lua/lib/append.lua).
type eventID struct{ n, k uint64 }

// parseEventID parses an event id; "" is the zero id, before every event.
// Anything else that is not "<n>-<k>" in decimal gives an error
// wrapping progress.ErrBadEventID.
func parseEventID(s string) (eventID, error) {
	if s == "" {
		return eventID{}, nil
	}
	n, k, ok := strings.Cut(s, "-")
	if ok {
		m, err1 := parseDecimal(n)
		q, err2 := parseDecimal(k)
		if err1 == nil && err2 == nil {
			return eventID{m, q}, nil
		}
	}
	return eventID{}, fmt.Errorf("%w: %q is not of the form <n>-<k>", progress.ErrBadEventID, s)
}

// parseDecimal accepts only plain decimal digits (no sign, no spaces).
func parseDecimal(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, 64)
}

// compare returns -1, 0 or +1 as a is before, equal to or after c.
func (a eventID) compare(c eventID) int {
	switch {
	case a.n < c.n || (a.n == c.n && a.k < c.k):
		return -1
	case a == c:
		return 0
	default:
		return 1
	}
}

// isZero reports whether a is the id before every event.
func (a eventID) isZero() bool { return a == eventID{} }

// isMax reports whether no id can follow a.
func (a eventID) isMax() bool { return a.n == ^uint64(0) && a.k == ^uint64(0) }

// String returns a as an event id, "" for the zero id.
func (a eventID) String() string {
	if a.isZero() {
		return ""
	}
	return strconv.FormatUint(a.n, 10) + "-" + strconv.FormatUint(a.k, 10)
}
