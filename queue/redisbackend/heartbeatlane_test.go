package redisbackend_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// holdProxy forwards TCP connections to a Redis server and, once a
// connection has carried more than after bytes of requests, holds that
// connection's requests back until release: a link that takes its time
// over a large request, as a loaded host or a slow network does.
type holdProxy struct {
	ln     net.Listener
	target string
	after  int

	held     chan struct{} // closed once a connection is held
	holdOnce sync.Once
	released chan struct{}
	freeOnce sync.Once

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// newHoldProxy starts a proxy to srv, released and stopped when the test
// ends.
func newHoldProxy(t *testing.T, srv *redistest.Server, after int) *holdProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &holdProxy{ln: ln, target: srv.Addr(), after: after, held: make(chan struct{}), released: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// release lets the held requests go on.
func (p *holdProxy) release() { p.freeOnce.Do(func() { close(p.released) }) }

func (p *holdProxy) accept() {
	defer p.wg.Done()
	pairEach(p.ln, p.target, func(client, server net.Conn) {
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.forward(client, server, true)
		go p.forward(server, client, false)
	})
}

// forward copies from to to; requests (hold set) stop once after bytes
// have gone, until release.
func (p *holdProxy) forward(from, to net.Conn, hold bool) {
	defer p.wg.Done()
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 64<<10)
	sent := 0
	for {
		n, err := from.Read(buf)
		if n > 0 {
			sent += n
			if hold && sent > p.after {
				p.holdOnce.Do(func() { close(p.held) })
				<-p.released
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *holdProxy) close() {
	p.release()
	closeProxy(p.ln, &p.mu, &p.conns, &p.wg)
}

// TestHeartbeatPassesReports: a worker's heartbeat does not wait behind
// the megabytes its flows report. The CI's failure: a flow logged 20 MiB
// (MaxReportBytes -1) on a loaded host; the heartbeats, pipelined on the
// client's connection behind that append, were not answered within their
// interval, the worker took the backend for unreachable, stopped the flow
// and handed its task back, and the next attempt did the same: the task
// ran three times, its log three times over. Redis itself answered all
// along.
func TestHeartbeatPassesReports(t *testing.T) {
	srv := redistest.Start(t)
	p := newHoldProxy(t, srv, 1<<20)
	opt := srv.ClientOption()
	opt.InitAddress = []string{p.ln.Addr().String()}
	b := newBackend(t, testClient(t, opt), redisbackend.Config{OpTimeout: waitLimit})
	ctx := context.Background()
	w := queue.WorkerInfo{Name: "w", Heartbeat: time.Second, Lease: time.Minute}
	require.NoError(t, b.Heartbeat(ctx, w))

	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	line := strings.Repeat("a", 1<<20)
	events := make([]progress.Event, 8)
	for i := range events {
		events[i] = progress.LogEvent(line)
	}
	appended := make(chan error, 1)
	go func() {
		_, err := b.Append(ctx, id, events...)
		appended <- err
	}()
	select {
	case <-p.held:
	case err := <-appended:
		require.FailNow(t, "the append went through the proxy unheld", "err %v", err)
	case <-time.After(waitLimit):
		require.FailNow(t, "the proxy held no connection")
	}

	// The append is held on its way (its OpTimeout is the guard's): a
	// heartbeat must get through meanwhile, in the time a worker gives
	// it; behind the append it would wait for the release.
	hctx, cancel := context.WithTimeout(ctx, redisbackend.DefaultOpTimeout)
	err := b.Heartbeat(hctx, w)
	cancel()
	require.NoError(t, err, "a heartbeat sent while the worker's reports are on their way")

	p.release()
	select {
	case err := <-appended:
		require.NoError(t, err)
	case <-time.After(waitLimit):
		require.FailNow(t, "the append did not end once released")
	}
	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	require.Len(t, snap.Details.StepResults, len(events))
}
