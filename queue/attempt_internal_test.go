package queue

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestGaveUpStatusAfterAHandBack(t *testing.T) {
	// A worker's status for a task whose attempts are spent, its last
	// lease handed back after the attempt that counted.
	for _, tc := range []struct {
		name    string
		counted AttemptEnd
		want    string
	}{
		{"worker lost", EndWorkerLost, "gave up after 1 attempt: the worker was lost (then handed back: progress store unavailable)"},
		{"lease expired", EndLeaseExpired, "gave up after 1 attempt: the lease expired (then handed back: progress store unavailable)"},
		{"failed", EndFailed, "gave up after 1 attempt: the flow failed (then handed back: progress store unavailable)"},
		{"an end of another kind", "cut", "gave up after 1 attempt: it ended: cut (then handed back: progress store unavailable)"},
		{"a record written before CountedEnd was kept", "", "gave up after 1 attempt (then handed back: progress store unavailable)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := &Task{Attempt: 3, MaxAttempts: 1, HandBacks: 1, PreviousEnd: EndStoreDown, CountedEnd: tc.counted}
			assert.Equal(t, tc.want, "gave up after 1 attempt"+task.spentText())
		})
	}
}
