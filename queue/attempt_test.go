package queue_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/queue"
)

func TestTaskAttempts(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		attempt, hookRetries int
		want                 int
	}{
		{"waiting for its first run", 0, 0, 0},
		{"runs of the flow only", 3, 0, 3},
		{"a run, then two leases that ran the hooks again", 3, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := queue.Task{Attempt: tc.attempt, HookRetries: tc.hookRetries}
			assert.Equal(t, tc.want, task.Attempts())
		})
	}
}
