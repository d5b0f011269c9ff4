package redisbackend

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/flowsrun/flows/progress"
)

// eventID is a stream entry id, "<ms>-<seq>", the form of every event id.
type eventID struct{ ms, seq uint64 }

// parseEventID parses an event id; "" is the zero id, before every event.
// Anything else that is not "<ms>-<seq>" in decimal gives an error
// wrapping progress.ErrBadEventID.
func parseEventID(s string) (eventID, error) {
	if s == "" {
		return eventID{}, nil
	}
	ms, seq, ok := strings.Cut(s, "-")
	if ok {
		m, err1 := parseDecimal(ms)
		q, err2 := parseDecimal(seq)
		if err1 == nil && err2 == nil {
			return eventID{m, q}, nil
		}
	}
	return eventID{}, fmt.Errorf("%w: %q is not of the form <ms>-<seq>", progress.ErrBadEventID, s)
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
	case a.ms < c.ms || (a.ms == c.ms && a.seq < c.seq):
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
func (a eventID) isMax() bool { return a.ms == ^uint64(0) && a.seq == ^uint64(0) }

// String returns a in the form Redis uses, "" for the zero id.
func (a eventID) String() string {
	if a.isZero() {
		return ""
	}
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}
