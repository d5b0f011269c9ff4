package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/slowclient"
)

// serveForTest runs serve(cfg) on a loopback listener until the test ends
// and returns the listener's address.
func serveForTest(t *testing.T, cfg config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("serve did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

func TestServerCapsHeaderSize(t *testing.T) {
	addr := serveForTest(t, testConfig())
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	for _, tc := range []struct {
		name   string
		pad    int
		status int
	}{
		{"headers of a browser", 4 << 10, http.StatusOK},
		{"headers of 100 KiB", 100 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/flows/", nil)
			require.NoError(t, err)
			req.Header.Set("X-Pad", strings.Repeat("p", tc.pad))
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, tc.status, resp.StatusCode)
		})
	}
}

// TestServerClosesSlowBodies floods the demo server with connections that
// send a start-task body one byte every 20ms: each is answered 408 and
// closed within -body-timeout, long before its body would be complete.
func TestServerClosesSlowBodies(t *testing.T) {
	cfg := testConfig()
	cfg.BodyTimeout = 300 * time.Millisecond
	addr := serveForTest(t, cfg)
	const (
		conns   = 100
		bodyLen = 1000 // 20 s at one byte per 20ms
	)
	closed := 0
	head := "POST /start-task/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	for _, res := range slowclient.Flood(conns, addr, head, bodyLen, 20*time.Millisecond, 20*time.Second) {
		if res.Err == nil && res.Sent < bodyLen/2 {
			closed++
			assert.Equal(t, "HTTP/1.1 408 Request Timeout", res.Status)
		}
	}
	assert.Equal(t, conns, closed, "connections the server closed while most of their body was still to come")
}
