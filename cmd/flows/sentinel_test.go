package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/testcert"
)

// TestSentinelWithoutMasterSet gives the command a sentinel's address
// without master_set, the README's Sentinel form with the name
// forgotten: rueidis connects to the sentinel itself, which refuses the
// backend's commands (unknown command 'ZRANGE'). The command says what to
// add to the URL instead.
func TestSentinelWithoutMasterSet(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Sentinels: 1})
	var out, errw bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code := run(ctx, []string{"ls"}, &out, &errw, func(k string) string {
		if k == "REDIS_URL" {
			return "redis://" + s.Sentinels[0].Addr()
		}
		return ""
	})
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errw.String(), "is a Redis Sentinel")
	assert.Contains(t, errw.String(), "master_set=<name>")
}

// tlsURLEnv names, for the test binary run again by
// TestSentinelsOverTLS, the REDIS_URL to run against.
const tlsURLEnv = "FLOWS_TEST_TLS_URL"

// TestSentinelsOverTLS lists the tasks of a primary found through
// sentinels that, as the primary, listen on TLS only, named by a
// rediss:// URL with master_set and the sentinels' password: the
// command dials the sentinels over TLS, with their password. The test
// binary runs again with the CA in SSL_CERT_FILE, which Go reads once
// per process.
func TestSentinelsOverTLS(t *testing.T) {
	if url := os.Getenv(tlsURLEnv); url != "" {
		var out, errw bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		code := run(ctx, []string{"ls"}, &out, &errw, func(k string) string {
			if k == "REDIS_URL" {
				return url
			}
			return ""
		})
		require.Equal(t, exitOK, code, errw.String())
		return
	}
	const sentinelPass = "sentinel-secret"
	dir := t.TempDir()
	ca := testcert.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "node", "127.0.0.1")
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Sentinels: 1,
		TLS: &redisproc.TLS{CertFile: cert, KeyFile: key, CAFile: ca.File}})
	_, err := s.Sentinels[0].Do("ACL", "SETUSER", "default", "resetpass", ">"+sentinelPass)
	require.NoError(t, err)
	url := s.URL() + "&sentinel_password=" + sentinelPass
	require.True(t, strings.HasPrefix(url, "rediss://"), url)
	for _, tc := range []struct {
		name string
		url  string
		ok   bool
	}{
		{name: "with the sentinels' password", url: url, ok: true},
		{name: "without it", url: s.URL()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSentinelsOverTLS$", "-test.v")
			cmd.Env = append(os.Environ(), tlsURLEnv+"="+tc.url, "SSL_CERT_FILE="+ca.File, "SSL_CERT_DIR="+dir)
			out, err := cmd.CombinedOutput()
			t.Logf("flows ls over TLS:\n%s", out)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, string(out), "NOAUTH")
			assert.Contains(t, string(out), "sentinel_password=<password>", "the hint")
			assert.NotContains(t, string(out), sentinelPass)
		})
	}
}
