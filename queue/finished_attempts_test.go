package queue_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/queue"
)

// TestFinishedAttempts: a finish hook's call counts the lease it runs
// under only if that lease ran the flow.
func TestFinishedAttempts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		attempt int
		started bool
		want    int
	}{
		{"ran the flow", 2, true, 2},
		{"found the task ended", 3, false, 2},
		{"never leased", 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := queue.Finished{Task: &queue.Task{Attempt: tc.attempt}}
			if tc.started {
				f.StartedAt = time.Now()
			}
			assert.Equal(t, tc.want, f.Attempts())
		})
	}
}
