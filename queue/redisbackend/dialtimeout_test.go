//go:build linux

package redisbackend_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// unanswered returns the address of a listening socket whose backlog is
// full: a connection attempt to it is neither accepted nor refused, and
// times out, as one to a host that drops it does.
func unanswered(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, syscall.Listen(fd, 0))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// A backlog of 0 holds one connection: this one fills it.
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return addr
}

// TestDialTimeoutIsRetried: while a connection to Redis cannot be made
// because the attempt times out (not refused), an append fails with an
// error a reporter retries. When the dial gives up before the operation's
// bound (Config.OpTimeout), the append certainly was not sent:
// progress.ErrNotSent. When the bound ends the dial, that cannot be told
// from a command that got no answer: a keyed append then fails with
// progress.ErrMaybeSent.
//
// Which of the two timers the client sees first is up to the clock: the
// dial's 100 ms is given a bound of 3 s, so that a test process stalled
// for a few hundred milliseconds does not see the bound first (it did
// now and then with a bound of 300 ms).
func TestDialTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		dialTimeout time.Duration
		opTimeout   time.Duration
		want        []error // one of them
	}{
		{"dial gives up first", 100 * time.Millisecond, 3 * time.Second, []error{progress.ErrNotSent}},
		{"bound ends the dial", 0, 300 * time.Millisecond, []error{progress.ErrNotSent, progress.ErrMaybeSent}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := appendWhileDialTimesOut(t, tt.dialTimeout, tt.opTimeout)
			assert.ErrorIs(t, err, queue.ErrUnavailable)
			assert.True(t, errors.Is(err, tt.want[0]) || errors.Is(err, tt.want[len(tt.want)-1]), "want one of %v, got %v", tt.want, err)
			if errors.Is(err, progress.ErrNotSent) {
				assert.NotErrorIs(t, err, progress.ErrMaybeSent, "not sent is certain")
			}
		})
	}
}

// appendWhileDialTimesOut makes a keyed append while the client's
// dials time out (after dialTimeout, 0 for rueidis's default of 5 s),
// with opTimeout as Config.OpTimeout, and returns its error.
func appendWhileDialTimesOut(t *testing.T, dialTimeout, opTimeout time.Duration) error {
	t.Helper()
	srv := redistest.Start(t)
	hole := unanswered(t)
	var cut atomic.Bool
	opt := srv.ClientOption()
	opt.Dialer.Timeout = dialTimeout
	opt.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
		if cut.Load() {
			addr = hole
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	b := newBackend(t, testClient(t, opt), redisbackend.Config{OpTimeout: opTimeout})
	ctx := context.Background()
	id := newTask().ID
	require.NoError(t, b.Create(ctx, id))

	cut.Store(true)
	require.NoError(t, srv.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Error())
	// The first calls may meet the connection killed under them; then
	// the client dials again.
	var err error
	eventually(t, func() bool {
		_, err = b.Append(progress.WithAppendKey(ctx, "k"), id, progress.LogEvent("lost"))
		return err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET)
	}, "the killed connection is left behind")
	return err
}
