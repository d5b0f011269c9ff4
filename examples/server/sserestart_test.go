package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// processQueue is a prefix and queue of their own for the server processes
// of one test, with a backend the test reads the tasks' records through.
type processQueue struct {
	prefix, queue string
	b             *redisbackend.Backend
}

// newProcessQueue returns a processQueue on srv.
func newProcessQueue(t *testing.T, srv *redistest.Server) *processQueue {
	t.Helper()
	var buf [6]byte
	_, err := rand.Read(buf[:])
	require.NoError(t, err)
	q := &processQueue{prefix: "t" + hex.EncodeToString(buf[:]), queue: "q" + hex.EncodeToString(buf[:3])}
	opt := srv.ClientOption()
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	q.b, err = redisbackend.New(client, redisbackend.Config{Prefix: q.prefix, Queue: q.queue, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, q.b.Close()) })
	return q
}

// args are the flags that point a server process at q, followed by extra.
func (q *processQueue) args(extra ...string) []string {
	return append([]string{"-prefix", q.prefix, "-queue", q.queue}, extra...)
}

// startWeb starts a web process on q (no workers) listening on addr.
func (q *processQueue) startWeb(t *testing.T, srv *redistest.Server, addr string) *serverProcess {
	t.Helper()
	return startServerProcess(t, srv.URL(), addr, q.args("-workers", "0", "-grace", "1s")...)
}

// startWorker starts a process that runs the flows of q, n at once: a
// server process that nobody sends requests to, whose in-process workers
// are those of a worker process.
func (q *processQueue) startWorker(t *testing.T, srv *redistest.Server, n int, extra ...string) *serverProcess {
	t.Helper()
	return startServerProcess(t, srv.URL(), freeAddr(t), q.args(append([]string{"-workers", strconv.Itoa(n)}, extra...)...)...)
}

// eventIDs returns the ids of every stored event of the task, in order.
func (q *processQueue) eventIDs(t *testing.T, id string) []string {
	t.Helper()
	events, err := q.b.Events(context.Background(), id, "")
	require.NoError(t, err)
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

// state returns the state of the task in Redis.
func (q *processQueue) state(t *testing.T, id string) progress.State {
	t.Helper()
	snap, _, err := q.b.Snapshot(context.Background(), id)
	require.NoError(t, err)
	return snap.State
}

// TestServerRestartUnderLiveStreams follows running poem_flow tasks with
// 50 clients that behave as a browser's EventSource, then stops the web
// process mid-run (kill -9, or SIGTERM) and starts a new one on the same
// port, while a separate worker process keeps running the flows. Every
// client must see every event of its task exactly once and in order,
// across its reconnections with Last-Event-ID, up to the SUCCESS snapshot;
// no task is lost.
func TestServerRestartUnderLiveStreams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, p *serverProcess)
	}{
		{"kill -9", func(_ *testing.T, p *serverProcess) { p.kill() }},
		{"SIGTERM", func(t *testing.T, p *serverProcess) {
			assert.Equal(t, 0, p.terminate(30*time.Second), "exit status after SIGTERM")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				tasks     = 10
				perTask   = 5
				clients   = tasks * perTask
				waitLimit = 2 * time.Minute
			)
			srv := redistest.Start(t)
			q := newProcessQueue(t, srv)
			worker := q.startWorker(t, srv, tasks)
			addr := freeAddr(t)
			web := q.startWeb(t, srv, addr)

			ids := make([]string, tasks)
			for i := range ids {
				ids[i] = startTask(t, http.DefaultClient, web.url(), `{"flow": "poem_flow"}`)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			results := make([]followed, clients)
			var (
				wg      sync.WaitGroup
				started atomic.Int32 // clients that have seen an event
			)
			for c := range clients {
				wg.Go(func() {
					var once sync.Once
					results[c] = eventSource(ctx, web.url(), ids[c%tasks], func(id string) {
						if id != "" {
							once.Do(func() { started.Add(1) })
						}
					})
				})
			}
			t.Cleanup(func() { cancel(); wg.Wait() })

			waitFor(t, ctx, func() bool { return started.Load() == clients }, "every client saw an event of its running task")
			for _, id := range ids {
				require.False(t, q.state(t, id).Terminal(), "task %s ended before the restart: the test needs longer flows", id)
			}
			tc.stop(t, web)
			web = q.startWeb(t, srv, addr)

			wg.Wait()
			require.NoError(t, ctx.Err(), "the clients did not finish within %v", waitLimit)
			connections := 0
			for c, f := range results {
				connections += f.Connections
				id := ids[c%tasks]
				want := q.eventIDs(t, id)
				var got []string
				for _, eid := range f.IDs {
					if eid != "" { // the PENDING snapshot, before any event
						got = append(got, eid)
					}
				}
				assert.Equal(t, http.StatusOK, f.End, "client %d of task %s: %s", c, id, f)
				assert.Equal(t, progress.StateSuccess, f.Last.State, "client %d of task %s: %s", c, id, f)
				assert.Equal(t, want, got, "client %d of task %s: every event once, in order, across the restart", c, id)
				assert.GreaterOrEqual(t, f.Connections, 2, "client %d of task %s was not cut by the restart: %s", c, id, f)
			}
			for _, id := range ids {
				assert.Equal(t, progress.StateSuccess, q.state(t, id), "task %s", id)
			}
			t.Logf("%d clients of %d tasks made %d stream requests in all", clients, tasks, connections)
			require.True(t, worker.running(), "the worker process exited:\n%s", worker.logTail(20))
			assert.Equal(t, 0, web.terminate(30*time.Second), "exit status of the new web process")
			assert.Equal(t, 0, worker.terminate(30*time.Second), "exit status of the worker process")
		})
	}
}

// waitFor polls cond until it holds, failing the test with what it waited
// for when ctx ends first.
func waitFor(t *testing.T, ctx context.Context, cond func() bool, what string) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			require.FailNow(t, "timed out waiting: "+what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
