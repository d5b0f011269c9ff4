//go:build linux && amd64

package ssehttp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// sysSetns is the number of setns(2) on linux/amd64, which package
// syscall does not name there.
const sysSetns = 308

// TestVanishedClientFreesItsStream watches a task from a client that then
// vanishes without closing its connection, as a laptop that is shut or a
// phone out of coverage does: the client is in a network namespace of its
// own, linked to the server's by a veth pair, and its address is taken
// away, so that nothing it would answer (ACKs, a FIN, a reset) reaches the
// server. Its stream of a quiet task sends heartbeats that fit in the send
// buffer, so no write waits: only a bound on unacknowledged data
// (LimitSendBuffer hands the connection to the handler, which sets
// TCP_USER_TIMEOUT to WriteTimeout) ends that stream before the kernel
// gives the connection up, about 15 minutes later. The test checks that
// the caller's place under MaxStreamsPerCaller comes free.
//
// It needs root (network namespaces) and the ip command; it is skipped
// otherwise.
func TestVanishedClientFreesItsStream(t *testing.T) {
	srvNS, cliNS, cliLink := linkedNetns(t)
	s := newSite(t, backendKinds[0].make)
	h := ssehttp.New(ssehttp.Config{
		Queue: s.broker, Progress: s.store, Registry: s.reg, Identify: bearerIdentify,
		MaxStreamsPerCaller: 1, Heartbeat: 100 * time.Millisecond, WriteTimeout: time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	var ln net.Listener
	inNetns(t, srvNS, func() (err error) {
		ln, err = net.Listen("tcp", "10.231.0.1:0")
		return err
	})
	srv := &http.Server{Handler: h, ConnContext: ssehttp.LimitSendBuffer(64 << 10)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()
	// No worker runs: the task stays PENDING, its stream quiet but for
	// heartbeats.
	id, err := s.broker.Enqueue(context.Background(), "poem_flow", nil, queue.EnqueueOptions{Owner: "alice"})
	require.NoError(t, err)
	request := "GET /task-status/" + id + "/ HTTP/1.1\r\nHost: flows\r\nAuthorization: Bearer alice\r\n\r\n"

	// The client opens its stream and reads its start.
	var client net.Conn
	inNetns(t, cliNS, func() (err error) {
		client, err = net.Dial("tcp", addr)
		return err
	})
	t.Cleanup(func() { client.Close() })
	require.NoError(t, client.SetDeadline(time.Now().Add(testTimeout)))
	_, err = io.WriteString(client, request)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// probe opens another stream of alice's, from the server's side of
	// the link, and reports whether it got one: an event stream without
	// the Retry-After of a caller over its cap.
	probe := func() bool {
		var opened bool
		inNetns(t, srvNS, func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
				return err
			}
			if _, err := io.WriteString(c, request); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			opened = resp.Header.Get("Retry-After") == ""
			return nil
		})
		return opened
	}
	require.False(t, probe(), "the client's stream holds alice's only place")

	// The client vanishes.
	ip(t, "-n", cliNS, "addr", "flush", "dev", cliLink)
	deadline := time.Now().Add(testTimeout)
	for !probe() {
		require.True(t, time.Now().Before(deadline), "alice's place is still held by the vanished client's stream after %v", testTimeout)
		time.Sleep(100 * time.Millisecond)
	}
}

// linkedNetns makes two network namespaces linked by a veth pair, the
// server's (10.231.0.1) and the client's (10.231.0.2), deleted when the
// test ends, and returns their names and the client's link. It skips the
// test when it cannot make them (no root, no ip command, no network
// namespaces or veth links in the kernel).
func linkedNetns(t *testing.T) (srvNS, cliNS, cliLink string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	srvNS, cliNS = "flowstest-"+tag+"-s", "flowstest-"+tag+"-c"
	srvLink, cliLink := "fls"+tag, "flc"+tag
	if out, err := exec.Command("ip", "netns", "add", srvNS).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", srvNS).Run() })
	ip(t, "netns", "add", cliNS)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", cliNS).Run() })
	if out, err := exec.Command("ip", "link", "add", srvLink, "netns", srvNS, "type", "veth", "peer", "name", cliLink, "netns", cliNS).CombinedOutput(); err != nil {
		t.Skipf("cannot make a veth pair: %v: %s", err, out)
	}
	for _, c := range [][]string{
		{"-n", srvNS, "addr", "add", "10.231.0.1/24", "dev", srvLink},
		{"-n", srvNS, "link", "set", srvLink, "up"},
		{"-n", srvNS, "link", "set", "lo", "up"},
		{"-n", cliNS, "addr", "add", "10.231.0.2/24", "dev", cliLink},
		{"-n", cliNS, "link", "set", cliLink, "up"},
	} {
		ip(t, c...)
	}
	return srvNS, cliNS, cliLink
}

// ip runs the ip command with args and fails the test if it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
}

// inNetns runs fn on an OS thread of its own moved into the network
// namespace ns, so that the sockets fn makes belong to ns, and fails the
// test if fn fails. The thread is never given back to other goroutines:
// it ends with fn's goroutine.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with this goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if _, _, errno := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
			errc <- fmt.Errorf("setns %s: %w", ns, errno)
			return
		}
		errc <- fn()
	}()
	require.NoError(t, <-errc)
}
