package redisproc

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartAndCloseRemovesOwnDir(t *testing.T) {
	s, err := Start(Options{})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.True(t, s.Running())
	assert.NotEqual(t, ReservedPort, s.Port())
	require.NoError(t, Ping(s.Addr()))
	assert.Equal(t, "redis://"+s.Addr()+"/0", s.URL())

	s.Close()
	assert.False(t, s.Running())
	assert.Error(t, Ping(s.Addr()))
	_, err = os.Stat(s.Dir())
	assert.True(t, errors.Is(err, os.ErrNotExist), "directory left behind: %v", err)
}

func TestGivenDirIsKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Options{Dir: dir})
	require.NoError(t, err)
	s.Close()
	assert.DirExists(t, dir)
	assert.FileExists(t, dir+"/redis.log")
}

func TestMissingServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(Options{})
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.Contains(t, err.Error(), "apt-get install redis-server")
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"no persistence", Options{}, []string{"--appendonly no", `--save `}},
		{"append only", Options{AppendOnly: true}, []string{"--appendonly yes --appendfsync everysec"}},
		{"extra args last", Options{Args: []string{"--maxmemory", "10mb"}}, []string{"--maxmemory 10mb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := strings.Join(Args(7000, "/d", tt.opts), " ")
			assert.Contains(t, args, "--port 7000 --bind 127.0.0.1")
			for _, w := range tt.want {
				assert.Contains(t, args, w)
			}
		})
	}
	args := strings.Join(Args(7000, "/d", Options{TLS: &TLS{CertFile: "/c", KeyFile: "/k", CAFile: "/ca"}}), " ")
	assert.Contains(t, args, "--port 0 --tls-port 7000 --tls-cert-file /c --tls-key-file /k --tls-ca-cert-file /ca")
	assert.NotContains(t, args, "--port 7000", "no plain port")
	args = strings.Join(Args(7000, "/d", Options{}), " ")
	assert.NotContains(t, args, "tls")

	last := Args(1, "/d", Options{Args: []string{"--save", "60 1"}})
	assert.Equal(t, []string{"--save", "60 1"}, last[len(last)-2:], "extra args come last, so they override")
}

// TestLaunchOnATakenPortFails: a server started on a port another server
// already holds cannot bind it and exits, while the other one answers
// PING in its place. launch tells them apart, so that Start moves on to
// another port instead of returning a server that is not running (as
// when a concurrent test's server takes the port between FreePort's
// probe and the bind).
func TestLaunchOnATakenPortFails(t *testing.T) {
	other, err := Start(Options{})
	require.NoError(t, err)
	t.Cleanup(other.Close)
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err)
	dir := t.TempDir()
	s := &Server{bin: bin, dir: dir, port: other.Port(), args: Args(other.Port(), dir, Options{})}
	t.Cleanup(s.Close)

	err = s.launch()
	require.Error(t, err, "another process's server answered for it")
	assert.Contains(t, err.Error(), "another process")
	assert.False(t, s.Running())
	assert.True(t, other.Running())
}
