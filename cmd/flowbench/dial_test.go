package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// tlsURLEnv names, for the test binary run again by
// TestTLSClusterSharingOneCertificate, the REDIS_URL to run against.
const tlsURLEnv = "FLOWBENCH_TEST_TLS_URL"

// TestTLSClusterSharingOneCertificate runs flowbench over TLS against a
// one-node Redis Cluster that announces itself as 127.0.0.1 and whose
// certificate names only localhost, the URL's host: the connections
// flowbench benchmarks, dialed at the announced address, accept it, as
// redisform.ParseURL's do. The test binary runs again with the CA in
// SSL_CERT_FILE, which Go reads once per process.
func TestTLSClusterSharingOneCertificate(t *testing.T) {
	if url := os.Getenv(tlsURLEnv); url != "" {
		getenv := func(name string) string {
			if name == "REDIS_URL" {
				return url
			}
			return ""
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var out bytes.Buffer
		err := run(ctx, []string{"-quick", "-scenario", "roundtrips"}, getenv, &out)
		require.NoError(t, err, "output so far:\n%s", out.String())
		assert.Contains(t, out.String(), "at REDIS_URL")
		return
	}
	dir := t.TempDir()
	files, _ := redistest.NewTLS(t, dir, "localhost")
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1, TLS: files})
	_, tlsPort, err := net.SplitHostPort(c.TLSAddrs[0])
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSClusterSharingOneCertificate$", "-test.v")
	cmd.Env = append(os.Environ(), tlsURLEnv+"=rediss://localhost:"+tlsPort,
		"SSL_CERT_FILE="+files.CAFile, "SSL_CERT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("flowbench over TLS:\n%s", out)
	require.NoError(t, err)
}

// TestUnixSocketURL runs flowbench against a Redis at a unix:// URL:
// the connections it benchmarks dial the socket, as the URL's options
// say, not TCP.
func TestUnixSocketURL(t *testing.T) {
	dir, err := os.MkdirTemp("", "fb") // short: a socket's path is limited
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	redistest.StartWith(t, redistest.Options{Args: []string{"--unixsocket", sock, "--unixsocketperm", "700"}})
	getenv := func(name string) string {
		if name == "REDIS_URL" {
			return "unix://" + sock
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = run(ctx, []string{"-quick", "-scenario", "roundtrips"}, getenv, &out)
	require.NoError(t, err, "output so far:\n%s", out.String())
	assert.Contains(t, out.String(), "at REDIS_URL")
}
