package redisbackend_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestReconnectionThatKeepsFailingWarnsOnce: the hub's pub/sub
// connection is lost and Redis then takes no new connection for several
// reconnection backoffs, being down or at maxclients. The loss is one
// warning, which names the node, the error and the failures so far; the
// reconnections that fail after it are debug lines. Once Redis takes
// connections again the link says so, at info, and holds the watched
// channel again.
func TestReconnectionThatKeepsFailingWarnsOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// cut loses the hub's connection and keeps Redis from taking a
		// new one until the function it returns.
		cut func(t *testing.T, srv *redistest.Server) (restore func())
	}{
		{"down", func(t *testing.T, srv *redistest.Server) func() {
			srv.Stop()
			return srv.Restart
		}},
		{"maxclients", func(t *testing.T, srv *redistest.Server) func() {
			subs := subscribedClients(t, srv)
			require.Len(t, subs, 1)
			lift := limitClients(t, srv, 1) // the connection killed, not to come back
			require.NoError(t, srv.Do("CLIENT", "KILL", "ID", subs[0]["id"]).Error())
			return lift
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			eachProtocol(t, func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption) {
				logs := &logBuffer{}
				b := newBackend(t, testClient(t, opt), redisbackend.Config{
					Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				})
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				watchTask(ctx, t, b, newTask().ID)
				require.Empty(t, logLines(logs, "WARN", "pub/sub"), "no warning yet:\n%s", logs)

				restore := tc.cut(t, srv)
				const failures = 4 // the loss, and reconnections backed off from 50 ms to 400 ms
				eventually(t, func() bool {
					return len(logLines(logs, "WARN", "lost"))+len(logLines(logs, "DEBUG", "lost")) >= failures
				}, "the reconnection fails again and again")
				warned := logLines(logs, "WARN", "pub/sub")
				require.Len(t, warned, 1, "one warning for the outage:\n%s", logs)
				assert.Contains(t, warned[0], "lost")
				assert.Contains(t, warned[0], "node=")
				assert.Contains(t, warned[0], "err=")
				assert.Contains(t, warned[0], "failures=1")

				recovers(t, srv, logs, restore, "restored", "pub/sub")
			})
		})
	}
}
