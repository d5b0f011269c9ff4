package redisbackend_test

import (
	"testing"
	"time"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/progress/progresstest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/queuetest"
	"github.com/flowsrun/flows/queue/redisbackend"
)

func TestProgressConformance(t *testing.T) {
	srv := redistest.Start(t)
	progresstest.Run(t, func(t *testing.T) progress.Backend {
		return newBackend(t, newClient(t, srv), redisbackend.Config{})
	})
}

func TestAppendKeyConformance(t *testing.T) {
	srv := redistest.Start(t)
	progresstest.RunAppendKeys(t, func(t *testing.T) progress.Backend {
		return newBackend(t, newClient(t, srv), redisbackend.Config{})
	})
}

func TestAppendKeyConformanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	progresstest.RunAppendKeys(t, func(t *testing.T) progress.Backend {
		return newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	})
}

func TestCheckpointConformance(t *testing.T) {
	srv := redistest.Start(t)
	progresstest.RunCheckpoints(t, func(t *testing.T) progresstest.CheckpointBackend {
		return newBackend(t, newClient(t, srv), redisbackend.Config{})
	})
}

func TestCheckpointConformanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	progresstest.RunCheckpoints(t, func(t *testing.T) progresstest.CheckpointBackend {
		return newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	})
}

// TestProgressRetentionConformance: a subscription of a task whose
// retention passes ends soon after, though the poll interval would not
// come for an hour: it reads when the task's keys expire.
func TestProgressRetentionConformance(t *testing.T) {
	srv := redistest.Start(t)
	progresstest.RunRetention(t, time.Second, func(t *testing.T) progress.Backend {
		return newBackend(t, newClient(t, srv), redisbackend.Config{Retention: time.Second, PollInterval: time.Hour})
	})
}

func TestProgressRetentionConformanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	progresstest.RunRetention(t, time.Second, func(t *testing.T) progress.Backend {
		return newBackend(t, newClusterClient(t, c), redisbackend.Config{Retention: time.Second, PollInterval: time.Hour})
	})
}

func TestQueueConformance(t *testing.T) {
	srv := redistest.Start(t)
	queuetest.Run(t, func(t *testing.T) (queue.Backend, progress.Backend) {
		b := newBackend(t, newClient(t, srv), redisbackend.Config{})
		return b, b
	})
}

func TestProgressConformanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	progresstest.Run(t, func(t *testing.T) progress.Backend {
		return newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	})
}

func TestQueueConformanceOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	queuetest.Run(t, func(t *testing.T) (queue.Backend, progress.Backend) {
		b := newBackend(t, newClusterClient(t, c), redisbackend.Config{})
		return b, b
	})
}

// TestQueueConformanceWithDelays runs the queue's contract with starts
// and ends that would go alone lingering (EnqueueDelay, AckDelay), and
// fetches letting tasks gather when they come fast (FetchDelay): nothing
// of the contract may change but latency.
func TestQueueConformanceWithDelays(t *testing.T) {
	srv := redistest.Start(t)
	queuetest.Run(t, func(t *testing.T) (queue.Backend, progress.Backend) {
		b := newBackend(t, newClient(t, srv), redisbackend.Config{
			EnqueueDelay: 20 * time.Millisecond, AckDelay: 5 * time.Millisecond, FetchDelay: time.Second,
		})
		return b, b
	})
}
