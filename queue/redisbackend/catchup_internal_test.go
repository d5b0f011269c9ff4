package redisbackend

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestPageCount: a read takes as many elements as readBudget holds at
// the size expected (the largest element of the page before, else the
// average from the task hash), at least one, at most pageSize, and one
// more after an id for the id's element; pageSize when nothing is known.
func TestPageCount(t *testing.T) {
	t.Parallel()
	first, mid := eventID{}, eventID{n: 7, k: 1, tag: "abcd"}
	const mib = 1 << 20
	tests := []struct {
		name      string
		size      elementSize
		fromFirst int64
		afterAnID int64
	}{
		{"nothing known", elementSize{}, pageSize, pageSize},
		{"small elements", elementSize{hint: 100}, pageSize, pageSize},
		{"average of 1 MiB", elementSize{hint: mib}, 4, 5},
		{"a page whose largest was 1 MiB", elementSize{hint: 100, largest: mib}, 4, 5},
		{"a page of small ones after large ones", elementSize{hint: mib, largest: 100}, pageSize, pageSize},
		{"elements past the budget", elementSize{largest: 16 * mib}, 1, 2},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.fromFirst, tt.size.count(first), "%s: from the first", tt.name)
		assert.Equal(t, tt.afterAnID, tt.size.count(mid), "%s: after an id", tt.name)
	}
	var s elementSize
	s.setHint("4194304", "4-2-abcd")
	assert.Equal(t, int64(mib), s.hint, "ebytes over the elements of last")
	for _, f := range [][2]string{{"", "4-2-abcd"}, {"100", ""}, {"x", "4-2-abcd"}, {"0", "4-2-abcd"}} {
		s = elementSize{}
		s.setHint(f[0], f[1])
		assert.Zero(t, s.hint, "no hint from %q", f)
	}
}
