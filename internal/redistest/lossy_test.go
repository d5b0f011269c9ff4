package redistest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKeepKeys: the keys come back as they were, with their expiry time,
// a key that did not exist is deleted, and keys not named are left as
// they are.
func TestKeepKeys(t *testing.T) {
	srv := Start(t)
	require.NoError(t, srv.Do("SET", "a", "1", "PXAT", "99999999999999").Error())
	require.NoError(t, srv.Do("RPUSH", "l", "x").Error())
	promote := srv.KeepKeys(t, "a", "l", "b")
	require.NoError(t, srv.Do("SET", "a", "2").Error())
	require.NoError(t, srv.Do("RPUSH", "l", "y").Error())
	require.NoError(t, srv.Do("SET", "b", "new").Error())
	require.NoError(t, srv.Do("SET", "other", "kept").Error())
	promote()

	a, err := srv.Do("GET", "a").ToString()
	require.NoError(t, err)
	assert.Equal(t, "1", a)
	at, err := srv.Do("PEXPIRETIME", "a").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(99999999999999), at)
	l, err := srv.Do("LRANGE", "l", "0", "-1").AsStrSlice()
	require.NoError(t, err)
	assert.Equal(t, []string{"x"}, l)
	at, err = srv.Do("PEXPIRETIME", "l").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(-1), at, "no expiry then, none now")
	n, err := srv.Do("EXISTS", "b").AsInt64()
	require.NoError(t, err)
	assert.Zero(t, n)
	other, err := srv.Do("GET", "other").ToString()
	require.NoError(t, err)
	assert.Equal(t, "kept", other)
}
