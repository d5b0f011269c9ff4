package redisproc

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
