package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRedisURLCredentialsKeptOut gives the command a Redis URL with a
// password and a secret query parameter, from REDIS_URL and from -redis,
// in forms that do not parse and for a Redis that is down: what it writes
// says what is wrong, without them. A Redis URL's error is the one most
// likely to be pasted into an issue or caught by a log collector.
func TestRedisURLCredentialsKeptOut(t *testing.T) {
	const pass, token = "PLANTED-pass", "PLANTED-token"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	require.NoError(t, ln.Close()) // nothing listens there now
	for _, tt := range []struct {
		name, url string
		flag      bool // give the URL with -redis, not REDIS_URL
		code      int
		contains  string
	}{
		{name: "bad port", url: "redis://user:" + pass + "@host:bad/0", code: exitUsage, contains: "Redis URL"},
		{name: "bad port, -redis", url: "redis://user:" + pass + "@host:bad/0", flag: true, code: exitUsage, contains: "Redis URL"},
		{name: "bad escape in the password", url: "redis://user:" + pass + "%zz@host:6379/0", code: exitUsage, contains: "Redis URL"},
		{name: "space in the password", url: "redis://user:" + pass + " x@127.0.0.1:nope/0?token=" + token, code: exitUsage, contains: "Redis URL"},
		{name: "Redis down", url: "redis://user:" + pass + "@127.0.0.1:" + port + "/0?token=" + token, code: exitFailed, contains: "connect to Redis"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"REDIS_URL": tt.url}
			args := []string{"ls"}
			if tt.flag {
				env = nil
				args = []string{"-redis", tt.url, "ls"}
			}
			var out, errw bytes.Buffer
			code := run(context.Background(), args, &out, &errw, func(k string) string { return env[k] })
			assert.Equal(t, tt.code, code, "stderr:\n%s", errw.String())
			assert.Contains(t, errw.String(), tt.contains)
			for _, secret := range []string{pass, token} {
				assert.NotContains(t, errw.String(), secret)
				assert.NotContains(t, out.String(), secret)
			}
		})
	}
}
