package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHealthcheck runs the container's health check against a running
// server, a server that answers with an error, and a port nobody listens
// on.
func TestHealthcheck(t *testing.T) {
	port := func(t *testing.T, srv *httptest.Server) string {
		t.Helper()
		u, err := url.Parse(srv.URL)
		require.NoError(t, err)
		return u.Port()
	}
	up := startServer(t, testConfig())
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "backend down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.Addr().String()
	require.NoError(t, closed.Close())

	tests := []struct {
		name    string
		addr    string
		wantErr string // "" means healthy
	}{
		{name: "server up, wildcard address", addr: ":" + port(t, up)},
		{name: "server up, unspecified host", addr: "0.0.0.0:" + port(t, up)},
		{name: "server up, loopback", addr: "127.0.0.1:" + port(t, up)},
		{name: "server answering 503", addr: ":" + port(t, failing), wantErr: "503"},
		{name: "nobody listening", addr: closedAddr, wantErr: "connect"},
		{name: "bad address", addr: "8080", wantErr: "-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := healthcheck(t.Context(), tt.addr)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}

	t.Run("flag", func(t *testing.T) {
		cfg, err := parseConfig([]string{"-healthcheck"}, func(string) string { return "" }, nil)
		require.NoError(t, err)
		assert.True(t, cfg.Healthcheck)
	})
}
