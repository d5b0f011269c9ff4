package pghistory_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// cutter is a TCP proxy to a PostgreSQL server that the test can cut: while
// cut, it closes the connections it holds and every new one at once, as a
// database that is down or restarting does.
type cutter struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cut     bool
	refused int // connections closed at once while cut
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	changed chan struct{} // closed and replaced when refused grows
}

// newCutter proxies to the database at dbURL and returns the URL that
// goes through the proxy; the proxy stops when the test ends.
func newCutter(t *testing.T, dbURL string) (*cutter, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	c := &cutter{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		c.setCut(true)
		c.wg.Wait()
	})
	u.Host = ln.Addr().String()
	return c, u.String()
}

func (c *cutter) serve() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.cut {
			c.refused++
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			_ = in.Close()
			continue
		}
		c.mu.Unlock()
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		c.mu.Lock()
		c.conns[in], c.conns[out] = struct{}{}, struct{}{}
		c.mu.Unlock()
		c.wg.Add(2)
		go c.pipe(in, out)
		go c.pipe(out, in)
	}
}

// pipe copies from src to dst until either ends, then closes both.
func (c *cutter) pipe(dst, src net.Conn) {
	defer c.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	c.mu.Lock()
	delete(c.conns, dst)
	delete(c.conns, src)
	c.mu.Unlock()
}

// setCut cuts the database off (closing the connections it holds) or
// lets it through again.
func (c *cutter) setCut(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for conn := range c.conns {
			_ = conn.Close()
		}
	}
}

// waitRefused waits until n connections have been refused while cut.
func (c *cutter) waitRefused(t *testing.T, n int) {
	t.Helper()
	for {
		c.mu.Lock()
		refused, changed := c.refused, c.changed
		c.mu.Unlock()
		if refused >= n {
			return
		}
		select {
		case <-changed:
		case <-t.Context().Done():
			t.Fatalf("only %d connections tried while cut", refused)
		}
	}
}

// finished returns what a worker's finish hook gets for r.
func finished(r pghistory.Record) queue.Finished {
	return queue.Finished{
		Task:     &queue.Task{ID: r.TaskID, Flow: r.Flow, Inputs: r.Inputs, Attempt: r.Attempts, MaxAttempts: r.MaxAttempts, EnqueuedAt: r.EnqueuedAt},
		Snapshot: r.Snapshot, Worker: r.Worker, StartedAt: r.StartedAt, EndedAt: r.EndedAt,
	}
}

// TestHookWaitsForTheDatabase: a Hook made while the database cannot be
// reached keeps trying, and writes the task's row once it can.
func TestHookWaitsForTheDatabase(t *testing.T) {
	c, through := newCutter(t, server.Database(t))
	s, _ := openURL(t, through)
	r := record(1)

	c.setCut(true)
	done := make(chan error, 1)
	go func() { done <- s.Hook(context.Background(), finished(r)) }()
	c.waitRefused(t, 2) // the hook failed and tried again
	select {
	case err := <-done:
		t.Fatalf("Hook returned while the database was cut off: %v", err)
	default:
	}
	c.setCut(false)
	require.NoError(t, <-done)

	got, err := s.Get(context.Background(), r.TaskID)
	require.NoError(t, err)
	assert.Equal(t, progress.StateSuccess, got.State)
	assert.Equal(t, r.Flow, got.Flow)
}

// TestHookAsksToRunAgainWhenItsTimeEnds: a database away for longer than
// the hook's context has Hook ask for the hooks to run again later
// (queue.ErrRetryHooks), saying why; the row is not written meanwhile.
func TestHookAsksToRunAgainWhenItsTimeEnds(t *testing.T) {
	c, through := newCutter(t, server.Database(t))
	s, _ := openURL(t, through)
	r := record(1)

	c.setCut(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Hook(ctx, finished(r)) }()
	c.waitRefused(t, 2)
	cancel()
	err := <-done
	require.Error(t, err)
	assert.ErrorIs(t, err, queue.ErrRetryHooks)
	assert.ErrorIs(t, err, queue.ErrUnavailable)

	c.setCut(false)
	_, err = s.Get(context.Background(), r.TaskID)
	assert.ErrorIs(t, err, pghistory.ErrNotFound)
}

// TestHookDoesNotRetryInvalidRecords: a record that Save refuses is
// refused at once, however long the hook's context lasts.
func TestHookDoesNotRetryInvalidRecords(t *testing.T) {
	s, _ := open(t)
	r := record(1)
	r.State, r.Snapshot.State = progress.StateProgress, progress.StateProgress
	err := s.Hook(context.Background(), finished(r))
	require.Error(t, err)
	assert.True(t, errors.Is(err, pghistory.ErrInvalidRecord), "%v", err)
	assert.False(t, errors.Is(err, queue.ErrRetryHooks), "an invalid record is not tried again later: %v", err)
}

// TestHookStopsWaitingOnceOneWaitedInVain: once a Hook has waited for
// the database through all of its time in vain, the database is taken
// for away: the next Hooks, however long their time, make one try and
// ask to run again, so that even a worker of one slot goes on running
// tasks. A row written brings the waiting back, for the next outage.
func TestHookStopsWaitingOnceOneWaitedInVain(t *testing.T) {
	c, through := newCutter(t, server.Database(t))
	s, _ := openURL(t, through)

	c.setCut(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Hook(ctx, finished(record(1))) }()
	c.waitRefused(t, 2) // it waits
	cancel()
	require.ErrorIs(t, <-done, queue.ErrRetryHooks, "it waited its whole time in vain")

	go func() { done <- s.Hook(context.Background(), finished(record(2))) }()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, queue.ErrRetryHooks)
		assert.ErrorIs(t, err, queue.ErrUnavailable)
	case <-time.After(30 * time.Second):
		c.setCut(false) // lets the Hook return
		<-done
		t.Fatal("Hook waited for a database that one Hook had waited for in vain")
	}

	c.setCut(false)
	r := record(3)
	require.NoError(t, s.Hook(context.Background(), finished(r)))
	_, err := s.Get(context.Background(), r.TaskID)
	require.NoError(t, err)

	// A row written: the next outage is waited for again.
	c.mu.Lock()
	refused := c.refused
	c.mu.Unlock()
	c.setCut(true)
	r = record(4)
	go func() { done <- s.Hook(context.Background(), finished(r)) }()
	c.waitRefused(t, refused+2)
	select {
	case err := <-done:
		t.Fatalf("Hook returned while the database was cut off: %v", err)
	default:
	}
	c.setCut(false)
	require.NoError(t, <-done)
}
