package redisbackend

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/flowsrun/flows/progress"
)

// eventID is an event id, "<n>-<k>-<tag>": the k-th event (from 0) of the
// n-th element (from 1) of its task's events list (see lua/lib/append.lua),
// and the tag of that element (see elementTag), which tells it from
// another element that took its place on another Redis: after a failover
// that lost the element, the task's next events take its n (see
// readEvents). An id without a tag, "<n>-<k>", is the form of earlier
// versions; it still names the same event, unchecked.
type eventID struct {
	n, k uint64
	tag  string
}

// tagLen is the length of an element's tag: four base-36 digits, so that
// an element that took the place of another has the same tag once in
// 36^4 (1.7 million).
const tagLen = 4

// tagSpace is the number of tags of tagLen digits.
const tagSpace = 36 * 36 * 36 * 36

// elementTag returns the tag of the element of an events list that holds
// events, as stored: the FNV-1a hash of its bytes, in tagLen base-36
// digits (leading zeros kept). Two elements with the same events and the
// same time have the same tag, and are the same to a reader; others have
// the same tag once in tagSpace.
func elementTag(element string) string {
	// FNV-1a, 32 bits (hash/fnv's, without copying element).
	h := uint32(2166136261)
	for i := 0; i < len(element); i++ {
		h ^= uint32(element[i])
		h *= 16777619
	}
	v := h % tagSpace
	var buf [tagLen]byte
	for i := tagLen - 1; i >= 0; i-- {
		buf[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[v%36]
		v /= 36
	}
	return string(buf[:])
}

// parseEventID parses an event id; "" is the zero id, before every event.
// Anything else that is not "<n>-<k>" or "<n>-<k>-<tag>" (n and k in
// decimal; n at least 1 with a tag, which is tagLen digits and lowercase
// letters) gives an error wrapping progress.ErrBadEventID.
func parseEventID(s string) (eventID, error) {
	if s == "" {
		return eventID{}, nil
	}
	n, rest, ok := strings.Cut(s, "-")
	k, tag, tagged := strings.Cut(rest, "-")
	if ok {
		m, err1 := parseDecimal(n)
		q, err2 := parseDecimal(k)
		if err1 == nil && err2 == nil && (!tagged || m > 0 && validTag(tag)) {
			return eventID{m, q, tag}, nil
		}
	}
	return eventID{}, fmt.Errorf("%w: %q is not of the form <n>-<k>-<tag>", progress.ErrBadEventID, s)
}

// validTag reports whether s may be a tag: tagLen base-36 digits, as
// elementTag writes them.
func validTag(s string) bool {
	if len(s) != tagLen {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// parseDecimal accepts only plain decimal digits (no sign, no spaces).
func parseDecimal(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, 64)
}

// compare returns -1, 0 or +1 as a is before, at or after c in a task's
// log; tags are not compared.
func (a eventID) compare(c eventID) int {
	switch {
	case a.n < c.n || (a.n == c.n && a.k < c.k):
		return -1
	case a.n == c.n && a.k == c.k:
		return 0
	default:
		return 1
	}
}

// is reports whether a and c name the same event: the same position, and
// the same tag unless one has none (an id of an earlier version).
func (a eventID) is(c eventID) bool {
	return a.n == c.n && a.k == c.k && (a.tag == c.tag || a.tag == "" || c.tag == "")
}

// conflicts reports whether a and c are in the same position of two
// different logs: the same element number and different tags.
func (a eventID) conflicts(c eventID) bool {
	return a.n == c.n && a.tag != "" && c.tag != "" && a.tag != c.tag
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
	s := strconv.FormatUint(a.n, 10) + "-" + strconv.FormatUint(a.k, 10)
	if a.tag != "" {
		s += "-" + a.tag
	}
	return s
}
