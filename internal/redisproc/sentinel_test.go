package redisproc

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/testcert"
)

func TestSentinelFailsOver(t *testing.T) {
	s, err := StartSentinel(SentinelOptions{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.Len(t, s.Data, 2)
	require.Len(t, s.Sentinels, 3)

	first, err := s.Primary()
	require.NoError(t, err)
	assert.Same(t, s.Data[0], first)
	// WAIT on the connection of the SET: on another it counts no write
	// and returns at once, replicated or not.
	replies, err := DoAll(first.Addr(), []string{"SET", "k", "v"}, []string{"WAIT", "1", "5000"})
	require.NoError(t, err)
	require.Equal(t, int64(1), replies[1], "the replica acknowledged the write")

	first.Kill()
	next, err := s.WaitFailover(first)
	require.NoError(t, err)
	assert.Same(t, s.Data[1], next)
	v, err := DoString(next.Addr(), "GET", "k")
	require.NoError(t, err)
	assert.Equal(t, "v", v, "the replica had the write")

	require.NoError(t, s.Rejoin(first))
	info, err := DoString(first.Addr(), "INFO", "replication")
	require.NoError(t, err)
	assert.Equal(t, "slave", infoField(info, "role"), "the old primary is a replica now")
	v, err = DoString(first.Addr(), "GET", "k")
	require.NoError(t, err)
	assert.Equal(t, "v", v, "and has the data")
}

func TestSentinelURL(t *testing.T) {
	s := &Sentinel{Sentinels: []*Server{{port: 26379}, {port: 26380}, {port: 26381}}, masterName: "m"}
	assert.Equal(t, "redis://127.0.0.1:26379?addr=127.0.0.1:26380&addr=127.0.0.1:26381&master_set=m", s.URL())
}

// TestSentinelOverTLS starts a setup whose servers, the sentinels too,
// listen on TLS only: a plain connection gets no answer, the package's
// own connections (Do, Primary) are TLS, and the sentinels fail over
// over TLS.
func TestSentinelOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "node", "127.0.0.1")
	s, err := StartSentinel(SentinelOptions{TLS: &TLS{CertFile: cert, KeyFile: key, CAFile: ca.File}})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	assert.True(t, strings.HasPrefix(s.URL(), "rediss://"+s.Sentinels[0].Addr()+"?"), s.URL())
	for _, n := range append(s.Data, s.Sentinels...) {
		assert.True(t, n.TLS())
		assert.Error(t, Ping(n.Addr()), "%s answers plain TCP", n.Addr())
		assert.NoError(t, n.Ping())
	}

	first, err := s.Primary()
	require.NoError(t, err)
	assert.Same(t, s.Data[0], first)
	replies, err := first.DoAll([]string{"SET", "k", "v"}, []string{"WAIT", "1", "5000"})
	require.NoError(t, err)
	require.Equal(t, int64(1), replies[1], "the replica acknowledged the write")
	first.Kill()
	next, err := s.WaitFailover(first)
	require.NoError(t, err)
	v, err := next.DoString("GET", "k")
	require.NoError(t, err)
	assert.Equal(t, "v", v)
}

// TestFailoverEvents: of a sentinel's log, the lines that tell why a
// failover did not come (TILT, an election, an abort) are kept, in their
// order; the chatter around them is not.
func TestFailoverEvents(t *testing.T) {
	log := strings.Join([]string{
		"2:X 08 Dec 2026 01:20:01.000 * Sentinel ID is 1c2d",
		"2:X 08 Dec 2026 01:20:01.001 # +monitor master mymaster 127.0.0.1 6379 quorum 2",
		"2:X 08 Dec 2026 01:20:05.000 * +sentinel sentinel 9f 127.0.0.1 26380 @ mymaster 127.0.0.1 6379",
		"2:X 08 Dec 2026 01:20:09.100 # +sdown master mymaster 127.0.0.1 6379",
		"2:X 08 Dec 2026 01:20:11.500 # +tilt #tilt mode entered",
		"2:X 08 Dec 2026 01:20:41.500 # -tilt #tilt mode exited",
		"2:X 08 Dec 2026 01:20:41.600 # +odown master mymaster 127.0.0.1 6379 #quorum 2/2",
		"2:X 08 Dec 2026 01:20:41.601 # +new-epoch 1",
		"2:X 08 Dec 2026 01:20:41.602 # +try-failover master mymaster 127.0.0.1 6379",
		"2:X 08 Dec 2026 01:20:51.700 # -failover-abort-not-elected master mymaster 127.0.0.1 6379",
		"",
	}, "\n")
	assert.Equal(t, []string{
		"01:20:09.100 +sdown master mymaster 127.0.0.1 6379",
		"01:20:11.500 +tilt #tilt mode entered",
		"01:20:41.500 -tilt #tilt mode exited",
		"01:20:41.600 +odown master mymaster 127.0.0.1 6379 #quorum 2/2",
		"01:20:41.602 +try-failover master mymaster 127.0.0.1 6379",
		"01:20:51.700 -failover-abort-not-elected master mymaster 127.0.0.1 6379",
	}, failoverEvents(log))
}
