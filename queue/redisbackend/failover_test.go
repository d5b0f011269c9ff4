package redisbackend_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/failover"
)

// TestSentinelFailover runs tasks through Redis Sentinel (one primary,
// one replica, three sentinels) and kills the primary with SIGKILL while
// its replica is cut off (stopped, its link dropped) for the last 300 ms:
// the sentinels promote the replica, the old primary comes back as its
// replica, and the web process and the worker go on with the new primary
// by themselves. In durable mode (WaitReplicas 1) no accepted task is
// lost: what the primary accepted while the replica was cut off was
// refused (503) instead. Without it, the tasks accepted in that window are
// lost with the primary, which the test reports. Times are reported, not
// checked.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wait int
	}{{"asynchronous replication", 0}, {"durable mode", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := failover.Run(context.Background(), failover.Options{WaitReplicas: tc.wait, LinkDown: 300 * time.Millisecond, Logger: quiet})
			require.NoError(t, err)
			t.Logf("%d tasks accepted, %d refused; lost %d, ran more than once %d; failover after %v, accepting again after %v, finishing after %v",
				res.Accepted, res.Refused, len(res.Lost), res.Duplicated,
				res.FailedOver.Round(time.Millisecond), res.Accepting.Round(time.Millisecond), res.Finishing.Round(time.Millisecond))
			require.Positive(t, res.Accepted)
			assert.Positive(t, res.Accepting, "tasks are accepted again after the failover")
			assert.Positive(t, res.Finishing, "and run")
			assert.Zero(t, res.DoubleEnded, "a task has one terminal state")
			if tc.wait > 0 {
				assert.Empty(t, res.Lost, "durable mode loses no accepted task")
				for _, l := range res.LostStates {
					t.Log(l)
				}
			}
		})
	}
}
