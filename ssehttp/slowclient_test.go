package ssehttp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/slowclient"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// TestSlowBodyFlood opens many connections that send a request body one
// byte at a time, far slower than Config.BodyTimeout allows: every one of
// them is answered and closed by the server while it still had most of
// its body to send, on a route that reads its body (start-task: 408) and
// on one that does not (cancel-task).
func TestSlowBodyFlood(t *testing.T) {
	e := newEnv(t, envOptions{config: ssehttp.Config{BodyTimeout: 300 * time.Millisecond}})
	addr := strings.TrimPrefix(e.server.URL, "http://")
	const (
		conns   = 60
		bodyLen = 1000 // 1000 bytes at one per 20ms would take 20s
		gap     = 20 * time.Millisecond
	)
	for _, route := range []struct {
		name, head, status string
	}{
		{"start-task", "POST /start-task/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n", "HTTP/1.1 408 Request Timeout"},
		{"cancel-task", "POST /cancel-task/" + strings.Repeat("a", 32) + "/ HTTP/1.1\r\nHost: x\r\n", "HTTP/1.1 404 Not Found"},
	} {
		t.Run(route.name, func(t *testing.T) {
			closed := 0
			for _, res := range slowclient.Flood(conns, addr, route.head, bodyLen, gap, testTimeout) {
				if res.Err != nil || res.Sent >= bodyLen/2 {
					continue // still open, or closed only once most of its body was in
				}
				closed++
				assert.Equal(t, route.status, res.Status)
			}
			assert.Equal(t, conns, closed, "connections the server closed while most of their body was still to come")
		})
	}
}

// TestBodyInTime checks that a body sent in pieces within BodyTimeout is
// served, and that the deadline does not outlive the request: the next
// request on the same connection, sent after more than BodyTimeout, is
// served too.
//
// The pieces take a small part of their BodyTimeout (150 ms of 2 s), so
// that a loaded machine that runs the client or the server late still
// gets them through in time: pieces that took 90 ms of 300 ms were
// answered 408 now and then on a busy runner. The deadline that must not
// outlive its request can be short: that request is written whole, in
// one write, and its body is already there when the deadline is set.
func TestBodyInTime(t *testing.T) {
	body := `{"flow":"poem_flow"}`
	head := fmt.Sprintf("POST /start-task/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))

	t.Run("in pieces", func(t *testing.T) {
		const timeout = 2 * time.Second
		conn, r := dialBodyTimeout(t, timeout)
		_, err := io.WriteString(conn, head)
		require.NoError(t, err)
		for _, piece := range []string{body[:5], body[5:12], body[12:]} {
			time.Sleep(timeout / 40)
			_, err = io.WriteString(conn, piece)
			require.NoError(t, err)
		}
		requireStatus(t, r, http.StatusOK)
	})

	t.Run("next request after the deadline", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		conn, r := dialBodyTimeout(t, timeout)
		_, err := io.WriteString(conn, head+body)
		require.NoError(t, err)
		requireStatus(t, r, http.StatusOK)

		time.Sleep(2 * timeout) // longer than the body deadline
		_, err = io.WriteString(conn, "GET /flows/ HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err, "the connection outlived the body deadline")
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// dialBodyTimeout serves a handler whose BodyTimeout is timeout and
// returns a connection to it, and a reader of its answers.
func dialBodyTimeout(t *testing.T, timeout time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	e := newEnv(t, envOptions{config: ssehttp.Config{BodyTimeout: timeout}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.server.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(testTimeout)))
	return conn, bufio.NewReader(conn)
}

// requireStatus reads the next answer from r, its body to the end, and
// requires its status to be want.
func requireStatus(t *testing.T, r *bufio.Reader, want int) {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, want, resp.StatusCode)
}

// countingListener counts the bytes the server writes to each connection
// it accepts, by the client's address. Its connections are *net.TCPConn
// underneath, so that SetWriteBuffer reaches the socket.
type countingListener struct {
	net.Listener
	mu      sync.Mutex
	written map[string]*int64
}

type countingConn struct {
	*net.TCPConn
	l *countingListener
	n *int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := new(int64)
	l.written[c.RemoteAddr().String()] = n
	return &countingConn{TCPConn: c.(*net.TCPConn), l: l, n: n}, nil
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	c.l.mu.Lock()
	*c.n += int64(n)
	c.l.mu.Unlock()
	return n, err
}

// bytesTo returns what the server has written to the client at addr.
func (l *countingListener) bytesTo(addr string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.written[addr]; n != nil {
		return *n
	}
	return 0
}

// TestStalledStreamIsDropped watches one task from two clients: one reads
// its stream, the other never reads a byte. The flow emits a large token
// only once the reading client has received the previous one, so a
// reading client held up by the stalled one would stop the test. The
// server's connections have their send buffers limited
// (LimitSendBuffer), so what the stalled client can make the server hold
// is bounded: the server drops it once that buffer is full and a write
// waits longer than WriteTimeout. What it had received by then is a
// prefix of the stream, in order; the reading client gets every event
// once, in order, to the end.
//
// WriteTimeout bounds every write to both streams, the reading client's
// too: it is far above the scheduling noise of a loaded machine, since a
// write to the reading client that waits that long (its reader or the
// server's handler not scheduled in time) cuts the reading client's stream
// as well. With 200 ms, a loaded run of the race detector cut it now and
// then. The stalled client is dropped one WriteTimeout after its buffers
// fill, which the test waits for.
func TestStalledStreamIsDropped(t *testing.T) {
	const writeTimeout = 2 * time.Second
	more := make(chan bool)
	big := strings.Repeat("x", 64<<10)
	var (
		mu     sync.Mutex
		closed = map[string]bool{} // client address -> closed by the server
	)
	var counter *countingListener
	e := newEnv(t, envOptions{
		config: ssehttp.Config{WriteTimeout: writeTimeout},
		register: func(reg *registry.Registry) {
			reg.MustRegister("firehose", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
				for i := 0; ; i++ {
					select {
					case goOn := <-more:
						if !goOn {
							return "done", nil
						}
						ft.Progress.Token(fmt.Sprintf("%06d %s", i, big))
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
			}))
		},
		server: func(srv *httptest.Server) {
			counter = &countingListener{Listener: srv.Listener, written: map[string]*int64{}}
			srv.Listener = counter
			srv.Config.ConnContext = ssehttp.LimitSendBuffer(64 << 10)
			srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					mu.Lock()
					closed[c.RemoteAddr().String()] = true
					mu.Unlock()
				}
			}
		},
	})
	id := e.start(t, "firehose")

	stalled, err := net.Dial("tcp", strings.TrimPrefix(e.server.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { stalled.Close() })
	_, err = io.WriteString(stalled, "GET /task-status/"+id+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	isClosed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return closed[stalled.LocalAddr().String()]
	}

	reader := e.open(t, id, "", "")
	nextToken := func(i int) {
		t.Helper()
		for {
			m, ok := reader.nextMessage(t)
			require.True(t, ok, "the stream ended before token %d", i)
			if m.Event == "token" {
				require.True(t, strings.HasPrefix(m.Data, fmt.Sprintf(`{"token":"%06d `, i)), "token %d out of order: %.30s", i, m.Data)
				return
			}
		}
	}
	// 200 tokens of 64 KiB (12.5 MiB): far more than the buffers of a
	// loopback connection hold. Then, while the task still runs, the
	// stalled client must be dropped: its pending write times out.
	const tokens = 200
	for n := range tokens {
		select {
		case more <- true:
		case <-time.After(testTimeout):
			t.Fatal("the flow stopped asking for more")
		}
		nextToken(n)
	}
	require.Eventually(t, isClosed, writeTimeout+testTimeout, 10*time.Millisecond, "a client that never reads was not dropped")
	held := counter.bytesTo(stalled.LocalAddr().String())
	assert.Less(t, held, int64(1<<20), "what the server wrote for a client that never reads is bounded by its send buffer")
	more <- false

	all := reader.rest(t)
	require.NotEmpty(t, all)
	assert.Equal(t, progress.StateSuccess, snapshotOf(t, all[len(all)-1]).State, "the reading client got to the end")

	// What the stalled client got: the answer, then messages in order,
	// then the end of the connection before the end of the stream.
	require.NoError(t, stalled.SetReadDeadline(time.Now().Add(testTimeout)))
	resp, err := http.ReadResponse(bufio.NewReader(stalled), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := 0
	frames := sse.NewReader(resp.Body)
	for {
		f, err := frames.Next()
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the stalled connection")
			break // the connection was cut, in a frame or between two
		}
		if f.Event == "token" {
			require.True(t, strings.HasPrefix(f.Data, fmt.Sprintf(`{"token":"%06d `, got)), "stalled client: token %d out of order", got)
			got++
		}
		require.NotContains(t, f.Data, `"state":"SUCCESS"`, "the stalled client was not dropped")
	}
	assert.Less(t, got, tokens, "the stalled client received less than the reading one")
	t.Logf("the server wrote %d KiB for the stalled client, which received %d of the %d tokens of 64 KiB", held>>10, got, tokens)
}

// TestDeclaredOversizedBody sends a start-task whose Content-Length is over
// MaxBodyBytes: it is answered 413 from its headers, before any of the
// body is read, so that a client is never asked to send (100 Continue)
// nor waited for (BodyTimeout) a body that would be refused anyway.
func TestDeclaredOversizedBody(t *testing.T) {
	conn, r := dialBodyTimeout(t, testTimeout)
	_, err := fmt.Fprintf(conn, "POST /start-task/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", int64(ssehttp.DefaultMaxBodyBytes)+1)
	require.NoError(t, err)
	requireStatus(t, r, http.StatusRequestEntityTooLarge)

	conn, r = dialBodyTimeout(t, testTimeout)
	_, err = fmt.Fprintf(conn, "POST /start-task/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\n\r\n{", int64(1)<<40)
	require.NoError(t, err)
	requireStatus(t, r, http.StatusRequestEntityTooLarge)
}

// TestStalledAnswerIsDropped asks for the JSON snapshot of a task whose
// steps weigh 4 MiB from a client that never reads a byte of the answer:
// the server drops it once its write has waited WriteTimeout, as it drops
// a stalled stream, rather than hold the connection, its goroutine and the
// encoded answer for as long as the client stays connected (the host is
// told not to set http.Server.WriteTimeout, which would cut streams).
func TestStalledAnswerIsDropped(t *testing.T) {
	var (
		mu     sync.Mutex
		closed = map[string]bool{} // client address -> closed by the server
	)
	e := newEnv(t, envOptions{
		config: ssehttp.Config{WriteTimeout: time.Second},
		register: func(reg *registry.Registry) {
			reg.MustRegister("bulky", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
				for i := range 64 {
					ft.Progress.Log(fmt.Sprintf("%02d %s", i, strings.Repeat("x", 64<<10)))
				}
				return "done", nil
			}))
		},
		server: func(srv *httptest.Server) {
			srv.Config.ConnContext = ssehttp.LimitSendBuffer(64 << 10)
			srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					mu.Lock()
					closed[c.RemoteAddr().String()] = true
					mu.Unlock()
				}
			}
		},
	})
	id := e.start(t, "bulky")
	e.waitTerminal(t, id)

	stalled, err := net.Dial("tcp", strings.TrimPrefix(e.server.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { stalled.Close() })
	require.NoError(t, stalled.(*net.TCPConn).SetReadBuffer(4<<10))
	_, err = io.WriteString(stalled, "GET /tasks/"+id+"/ HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return closed[stalled.LocalAddr().String()]
	}, testTimeout, 10*time.Millisecond, "a client that never reads its answer was not dropped")
}
