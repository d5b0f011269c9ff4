package redisbackend_test

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// Tests share one redis-server per top-level test; each backend gets a key
// prefix of its own, so that backends of subtests share nothing.
//
// Most top-level tests run in parallel (t.Parallel): each starts its own
// servers, and they spend their time waiting on Redis, on processes and
// on leases. Go runs the tests that do not call t.Parallel first, one at a
// time, before any parallel one starts. Those are the tests that count
// the process's goroutines (the conformance suites) and those that
// replace a package variable (SetInboxLimit, SetRetireIdle, SetFetchSleep,
// SetLingerTimer, lingerByHand); keep a new test of either kind serial.

// newClient returns a client of srv, closed when the test ends. It
// pipelines always, so that its connections start their goroutines on
// first use rather than under load; it pipelines on one connection, where
// rueidis would open a second on first use by a command that happens to
// pick it, at random; and it closes idle connections of its blocking pool
// (two workers blocked in Fetch at once open a second one): the
// conformance suite counts goroutines.
func newClient(t testing.TB, srv *redistest.Server) rueidis.Client {
	t.Helper()
	return testClient(t, srv.ClientOption())
}

// testClient connects with opt, set up as newClient says, and closes the
// client when the test ends.
func testClient(t testing.TB, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	opt.AlwaysPipelining = true
	opt.PipelineMultiplex = -1
	opt.BlockingPoolCleanup = 100 * time.Millisecond
	client, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return client
}

// newBackend returns a Backend on client with a fresh prefix unless cfg
// names one, closed when the test ends (before the client).
func newBackend(t testing.TB, client rueidis.Client, cfg redisbackend.Config) *redisbackend.Backend {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b, err := redisbackend.New(client, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func uniquePrefix(t testing.TB) string {
	t.Helper()
	var buf [6]byte
	_, err := rand.Read(buf[:])
	require.NoError(t, err)
	return "t" + hex.EncodeToString(buf[:])
}

// newClusterClient returns a Cluster client of c, closed when the test
// ends, set up as newClient's.
func newClusterClient(t testing.TB, c *redistest.Cluster) rueidis.Client {
	t.Helper()
	client := testClient(t, c.ClientOption())
	require.Equal(t, rueidis.ClientModeCluster, client.Mode())
	return client
}
