package redisbackend_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// logLines returns the lines of logs at level (as the text handler
// writes it: WARN, INFO, DEBUG) whose message mentions each of words.
func logLines(logs *logBuffer, level string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, "level="+level+" ") {
			continue
		}
		msg, _, _ := strings.Cut(line[strings.Index(line, "msg="):], " node=")
		all := true
		for _, w := range words {
			all = all && strings.Contains(msg, w)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// limitClients has srv refuse new connections (maxclients at the
// connections open now, less fewer: those about to be closed) until the
// returned function lets them in again; the test's end lets them in too.
func limitClients(t *testing.T, srv *redistest.Server, fewer int) (lift func()) {
	t.Helper()
	conf, err := srv.Do("CONFIG", "GET", "maxclients").AsStrMap()
	require.NoError(t, err)
	was := conf["maxclients"]
	require.NotEmpty(t, was)
	info, err := srv.Do("INFO", "clients").ToString()
	require.NoError(t, err)
	connected := -1
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_clients:"); ok {
			connected, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
	}
	require.GreaterOrEqual(t, connected, 0, "INFO clients: %s", info)
	require.NoError(t, srv.Do("CONFIG", "SET", "maxclients", strconv.Itoa(connected-fewer)).Error())
	lift = func() { require.NoError(t, srv.Do("CONFIG", "SET", "maxclients", was).Error()) }
	t.Cleanup(func() { _ = srv.Do("CONFIG", "SET", "maxclients", was).Error() })
	return lift
}

// recovers lets Redis take connections again (restore) and checks that
// the hub says so once, at info (a line whose message mentions info,
// with the failures), ends up with one connection that holds the watched
// channel only, and warns no further (warn: what the warnings' messages
// mention).
func recovers(t *testing.T, srv *redistest.Server, logs *logBuffer, restore func(), info, warn string) {
	t.Helper()
	restore()
	eventually(t, func() bool { return len(logLines(logs, "INFO", info)) == 1 },
		"the try that goes through is logged")
	assert.Contains(t, logLines(logs, "INFO", info)[0], "failures=")
	eventually(t, func() bool {
		subs := subscribedClients(t, srv)
		return len(subs) == 1 && subs[0]["ssub"] == "1"
	}, "one connection, with the watched channel only")
	assert.Len(t, logLines(logs, "WARN", warn), 1, "no further warning:\n%s", logs)
}

// TestReplacementThatKeepsFailingWarns: while Redis refuses new
// connections (maxclients reached), the replacement of the hub's
// connection fails on every try. The first failure is a warning that
// names the node, the error and the dead channels; the tries that follow
// within the minute are not. The old connection serves on meanwhile, and
// once Redis takes connections again the replacement goes through, says
// so, and leaves one connection that holds only the channel watched,
// whose watcher gets every event once.
func TestReplacementThatKeepsFailingWarns(t *testing.T) {
	t.Parallel()
	eachProtocol(t, func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption) {
		logs := &logBuffer{}
		b := newBackend(t, testClient(t, opt), redisbackend.Config{
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		var tries atomic.Int32
		hookReplacement(b, false, func() { tries.Add(1) })
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()

		live := newTask().ID
		first, watched := watchTask(ctx, t, b, live)
		leaveTask(ctx, t, b) // one dead channel: no more than the one watched
		require.Zero(t, tries.Load(), "no replacement yet")
		lift := limitClients(t, srv, 0)
		leaveTask(ctx, t, b) // two: a replacement is due, and fails

		const retries = 2
		eventually(t, func() bool { return len(logLines(logs, "DEBUG", "replac")) >= retries },
			"the replacement is tried again")
		warned := logLines(logs, "WARN", "replac")
		require.Len(t, warned, 1, "one warning for the failing replacement:\n%s", logs)
		assert.Contains(t, warned[0], "err=", "the error")
		assert.Contains(t, warned[0], "dead_channels=2")
		assert.Contains(t, warned[0], "node=")
		assert.Len(t, subscribedClients(t, srv), 1, "the old connection serves on")

		recovers(t, srv, logs, lift, "replaced", "replac")
		finishWatched(ctx, t, b, live, first, watched)
	})
}
