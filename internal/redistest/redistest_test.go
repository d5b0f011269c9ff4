package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartServesCommands(t *testing.T) {
	srv := Start(t)
	require.True(t, srv.Running())
	assert.NotEqual(t, reservedPort, srv.Port())
	assert.Equal(t, "redis://"+srv.Addr()+"/0", srv.URL())

	c := srv.Client(t)
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
	got, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
	require.NoError(t, err)
	assert.Equal(t, "v", got)

	// The default configuration persists nothing.
	cfg, err := srv.Do("CONFIG", "GET", "appendonly").AsStrMap()
	require.NoError(t, err)
	assert.Equal(t, "no", cfg["appendonly"])
	cfg, err = srv.Do("CONFIG", "GET", "save").AsStrMap()
	require.NoError(t, err)
	assert.Equal(t, "", cfg["save"])
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want map[string]string
	}{
		{"append only defaults to everysec", Options{AppendOnly: true}, map[string]string{"appendonly": "yes", "appendfsync": "everysec"}},
		{"append only always", Options{AppendOnly: true, AppendFsync: "always"}, map[string]string{"appendonly": "yes", "appendfsync": "always"}},
		{"extra args", Options{Args: []string{"--maxmemory", "10mb"}}, map[string]string{"appendonly": "no", "maxmemory": strconv.Itoa(10 << 20)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := StartWith(t, tt.opts)
			for key, want := range tt.want {
				cfg, err := srv.Do("CONFIG", "GET", key).AsStrMap()
				require.NoError(t, err)
				assert.Equal(t, want, cfg[key], key)
			}
		})
	}
}

func TestRestartKeepsAppendOnlyData(t *testing.T) {
	srv := StartWith(t, Options{AppendOnly: true, AppendFsync: "always"})
	port := srv.Port()
	require.NoError(t, srv.Do("SET", "kept", "1").Error())

	srv.Restart()
	assert.Equal(t, port, srv.Port())
	require.True(t, srv.Running())
	got, err := srv.Do("GET", "kept").ToString()
	require.NoError(t, err)
	assert.Equal(t, "1", got)
}

func TestRestartWithoutPersistenceLosesData(t *testing.T) {
	srv := Start(t)
	require.NoError(t, srv.Do("SET", "lost", "1").Error())
	srv.Restart()
	err := srv.Do("GET", "lost").Error()
	assert.True(t, rueidis.IsRedisNil(err), "GET after restart: %v", err)
}

func TestKillAfterFsyncAlwaysKeepsData(t *testing.T) {
	srv := StartWith(t, Options{AppendOnly: true, AppendFsync: "always"})
	require.NoError(t, srv.Do("SET", "k", "v").Error())
	srv.Kill()
	assert.False(t, srv.Running())
	srv.Restart()
	got, err := srv.Do("GET", "k").ToString()
	require.NoError(t, err)
	assert.Equal(t, "v", got)
}

func TestStopRefusesConnections(t *testing.T) {
	srv := Start(t)
	c := srv.Client(t)
	srv.Stop()
	assert.False(t, srv.Running())
	assert.Error(t, ping(srv.Addr()))
	assert.Error(t, c.Do(context.Background(), c.B().Ping().Build()).Error())
	srv.Stop() // stopping twice does nothing
	srv.Kill()
}

func TestServersAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	require.NotEqual(t, a.Port(), b.Port())
	require.NotEqual(t, a.Dir(), b.Dir())
	require.NoError(t, a.Do("SET", "only-in-a", "1").Error())
	assert.True(t, rueidis.IsRedisNil(b.Do("GET", "only-in-a").Error()))
}

func TestMissingServerFailsWithInstallHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	ft := &fatalTB{TB: t}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		Start(ft) // Fatalf ends this goroutine
		ft.returned = true
	}()
	wg.Wait()
	assert.False(t, ft.returned, "Start returned instead of failing")
	assert.Contains(t, ft.msg, "redis-server not found")
	assert.Contains(t, ft.msg, "apt-get install redis-server")
	assert.Contains(t, ft.msg, "brew install redis")
}

// fatalTB records Fatalf instead of failing the real test, and ends the
// calling goroutine as testing.T does.
type fatalTB struct {
	testing.TB
	msg      string
	returned bool
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func TestBuildArgs(t *testing.T) {
	args := strings.Join(buildArgs(7000, "/d", Options{Args: []string{"--loglevel", "debug"}}), " ")
	assert.Contains(t, args, "--port 7000")
	assert.Contains(t, args, "--bind 127.0.0.1")
	assert.Contains(t, args, "--appendonly no")
	assert.True(t, strings.HasSuffix(args, "--loglevel debug"), args)
}

func TestClusterClient(t *testing.T) {
	c := StartCluster(t, ClusterOptions{})
	client := c.Client(t)
	assert.Equal(t, rueidis.ClientModeCluster, client.Mode())
	ctx := context.Background()
	// Keys of every master's slots.
	for i := range 30 {
		key := "k" + strconv.Itoa(i)
		require.NoError(t, client.Do(ctx, client.B().Set().Key(key).Value(key).Build()).Error())
		got, err := client.Do(ctx, client.B().Get().Key(key).Build()).ToString()
		require.NoError(t, err)
		assert.Equal(t, key, got)
	}
	masters, err := c.Masters()
	require.NoError(t, err)
	assert.Len(t, masters, 3)
}

func TestSentinelClientFollowsFailover(t *testing.T) {
	s := StartSentinel(t, SentinelOptions{})
	client := s.Client(t)
	assert.Equal(t, rueidis.ClientModeSentinel, client.Mode())
	ctx := context.Background()
	require.NoError(t, client.Do(ctx, client.B().Set().Key("k").Value("before").Build()).Error())
	n, err := client.Do(ctx, client.B().Wait().Numreplicas(1).Timeout(5000).Build()).AsInt64()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the replica has the write")

	old, err := s.Primary()
	require.NoError(t, err)
	old.Kill()
	_, err = s.WaitFailover(old)
	require.NoError(t, err)
	var got string
	require.Eventually(t, func() bool {
		got, err = client.Do(ctx, client.B().Get().Key("k").Build()).ToString()
		return err == nil && client.Do(ctx, client.B().Set().Key("k2").Value("after").Build()).Error() == nil
	}, ClusterTimeout, 50*time.Millisecond, "the client writes to the new primary")
	assert.Equal(t, "before", got)
}

func TestMissingRedisCLIFailsWithInstallHint(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(dir, "redis-server")))
	t.Setenv("PATH", dir)
	ft := &fatalTB{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() {
		StartCluster(ft, ClusterOptions{}) // Fatalf ends this goroutine
		ft.returned = true
	})
	wg.Wait()
	assert.False(t, ft.returned, "StartCluster returned instead of failing")
	assert.Contains(t, ft.msg, "redis-cli not found")
	assert.Contains(t, ft.msg, "apt-get install redis-tools")
}
