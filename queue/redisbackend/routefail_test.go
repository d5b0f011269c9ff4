package redisbackend_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestSlotReadsThatKeepFailingWarnOnce: on a Cluster client whose hub
// watches a channel, the cluster goes down (its one master stopped) for
// several backoffs of the hub's reads of the slots. The first read that
// fails is one warning, which names the error and the failures so far;
// the reads that fail after it are debug lines. Once the master is back
// the read that goes through says so, at info, and the watcher gets
// every event of its task once.
func TestSlotReadsThatKeepFailingWarnOnce(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1, AppendOnly: true, AppendFsync: "always"})
	logs := &logBuffer{}
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	id := newTask().ID
	first, watched := watchTask(ctx, t, b, id)
	const reads = "slots of the Redis cluster"
	require.Empty(t, logLines(logs, "WARN", reads), "no warning yet:\n%s", logs)

	master := c.Nodes[0]
	master.Stop()
	const failures = 4 // reads backed off from 50 ms to 400 ms
	eventually(t, func() bool {
		return len(logLines(logs, "WARN", reads))+len(logLines(logs, "DEBUG", reads)) >= failures
	}, "the read of the slots fails again and again")
	warned := logLines(logs, "WARN", reads)
	require.Len(t, warned, 1, "one warning for the outage:\n%s", logs)
	assert.Contains(t, warned[0], "err=")
	assert.Contains(t, warned[0], "failures=1")

	require.NoError(t, master.Restart())
	eventually(t, func() bool { return len(logLines(logs, "INFO", reads)) == 1 },
		"the read that goes through is logged")
	assert.Contains(t, logLines(logs, "INFO", reads)[0], "failures=")
	finishWatched(ctx, t, b, id, first, watched)
	assert.Len(t, logLines(logs, "WARN", reads), 1, "no further warning:\n%s", logs)
}
