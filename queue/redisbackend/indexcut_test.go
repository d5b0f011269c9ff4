package redisbackend_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// errPipelineCut is what cutClient answers for the commands it does not send.
var errPipelineCut = errors.New("connection cut")

// cutClient leaves, while armed, what a process that dies (or a
// connection that breaks) in the middle of a pipeline leaves: of each
// pipelined round trip that holds a script, the commands up to and
// including the script reach Redis, and those after it do not (they get
// errPipelineCut). With at set, it cuts instead the first round trip that
// holds a command of that name (on a Redis Cluster too, whose client
// splits a round trip between nodes: the commands of a node run in
// order), after its first keep commands, and disarms itself; at "*"
// names any command, so that the first round trip is cut. cuts counts
// the commands left unsent.
//
// With queueOnly set, it sends instead, of the first round trip that
// holds a command named at, only the commands on the queue's slot (a
// key with the hash tag {q:...}), as a Redis Cluster whose node of the
// queue got its part of the pipeline and the other nodes not.
type cutClient struct {
	rueidis.Client
	armed     atomic.Bool
	at        string
	keep      int
	queueOnly bool
	cuts      atomic.Int64
}

func (c *cutClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	if c.queueOnly && c.armed.Load() && slices.ContainsFunc(cmds, func(cmd rueidis.Completed) bool {
		return strings.EqualFold(cmd.Commands()[0], c.at)
	}) && c.armed.CompareAndSwap(true, false) {
		res := make([]rueidis.RedisResult, len(cmds))
		var sent []rueidis.Completed
		var at []int
		for i, cmd := range cmds {
			if args := cmd.Commands(); len(args) > 1 && strings.Contains(args[1], "{q:") {
				sent, at = append(sent, cmd), append(at, i)
				continue
			}
			res[i] = rueidis.NewErrorResult(errPipelineCut)
			c.cuts.Add(1)
		}
		for j, r := range c.Client.DoMulti(ctx, sent...) {
			res[at[j]] = r
		}
		return res
	}
	n := len(cmds)
	if c.armed.Load() {
		for i, cmd := range cmds {
			name := strings.ToUpper(cmd.Commands()[0])
			if c.at == "" && (name == "EVALSHA" || name == "EVAL") {
				n = i + 1
				break
			}
			if c.at != "" && (name == c.at || c.at == "*") && c.armed.CompareAndSwap(true, false) {
				n = min(c.keep, len(cmds))
				break
			}
		}
	}
	res := c.Client.DoMulti(ctx, cmds[:n]...)
	for range cmds[n:] {
		res = append(res, rueidis.NewErrorResult(errPipelineCut))
	}
	c.cuts.Add(int64(len(cmds) - n))
	return res
}

// listedIDs returns the ids of the first page of o (which must hold them
// all).
func listedIDs(ctx context.Context, t *testing.T, b *redisbackend.Backend, o queue.ListOptions) []string {
	t.Helper()
	o.Limit = queue.MaxListLimit
	page, err := b.ListTasks(ctx, o)
	require.NoError(t, err)
	require.Empty(t, page.Next)
	var ids []string
	for _, s := range page.Tasks {
		ids = append(ids, s.ID)
	}
	return ids
}

// flowCounts returns the counts of flow in st, zero when it has none.
func flowCounts(st queue.Stats, flow string) queue.StateCounts {
	i := slices.IndexFunc(st.Flows, func(f queue.FlowCounts) bool { return f.Flow == flow })
	if i < 0 {
		return queue.StateCounts{}
	}
	return st.Flows[i].Counts
}

// TestStartCutAfterItsScriptIsListed starts tasks on a single Redis with
// the start's round trip cut right after the create script, as a process
// that dies there leaves it: each task exists (PENDING, queued, due now
// or later) and must be in the listings and the counts, of all flows and
// of its own, at once. The first start of a flow names it too, so its own
// counts are in the stats. (The index writes once followed the script in
// its pipeline: such a task stayed out of every listing and count until a
// worker started it, and a delayed one until its time came.)
func TestStartCutAfterItsScriptIsListed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cut := &cutClient{Client: newClient(t, srv)}
	b := newBackend(t, cut, redisbackend.Config{})
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f", "g")})
	ctx := context.Background()
	warm, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{}) // loads the script
	require.NoError(t, err)

	cut.armed.Store(true)
	now, err := broker.Enqueue(ctx, "g", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	later, err := broker.Enqueue(ctx, "g", nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	keyed, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{IdempotencyKey: "k"})
	require.NoError(t, err)
	cut.armed.Store(false)

	for _, id := range []string{now, later, keyed} {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		require.Equal(t, progress.StatePending, snap.State, "task %s exists", id)
	}
	all := listedIDs(ctx, t, b, queue.ListOptions{})
	assert.ElementsMatch(t, []string{warm, now, later, keyed}, all, "every task started is listed")
	assert.ElementsMatch(t, []string{warm, now, later, keyed}, listedIDs(ctx, t, b, queue.ListOptions{State: progress.StatePending}))
	assert.ElementsMatch(t, []string{now, later}, listedIDs(ctx, t, b, queue.ListOptions{Flow: "g"}))
	assert.ElementsMatch(t, []string{warm, keyed}, listedIDs(ctx, t, b, queue.ListOptions{Flow: "f"}))
	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.StateCounts{Pending: 4}, st.Counts)
	assert.Equal(t, queue.StateCounts{Pending: 2}, flowCounts(st, "g"), "flow g, named by a start cut after its script")
	assert.Equal(t, queue.StateCounts{Pending: 2}, flowCounts(st, "f"))
}

// TestRefusedStartIsNotCounted starts a task whose caller is over its
// pending limit on a single Redis: the create script refuses it, and
// nothing of it may be counted or listed, even before any listing has
// read the index.
func TestRefusedStartIsNotCounted(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f"),
		CallerLimits: queue.CallerLimits{MaxPending: 1}})
	ctx := context.Background()
	first, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "c"})
	require.NoError(t, err)
	_, err = broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{Caller: "c"})
	require.ErrorIs(t, err, queue.ErrCallerLimit)

	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, queue.StateCounts{Pending: 1}, st.Counts, "the refused start is not counted")
	assert.Equal(t, queue.StateCounts{Pending: 1}, flowCounts(st, "f"))
	assert.Equal(t, []string{first}, listedIDs(ctx, t, b, queue.ListOptions{}))
}

// TestEndCutAfterItsScriptIsListed ends leased tasks on a single Redis
// with the end's round trip cut right after its script (the end and
// acknowledgement, or an append that ends the task), as a process that
// dies there leaves it: each task has ended, and must be listed and
// counted in its end state at once, in listings of that state too. (The
// index writes once followed the script: such a task stayed in its old
// state in the counts, and out of the listings of its end state, until a
// listing of all states or of its old one met it, which a task nobody
// lists may never meet.)
func TestEndCutAfterItsScriptIsListed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cut := &cutClient{Client: newClient(t, srv)}
	b := newBackend(t, cut, redisbackend.Config{})
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
	ctx := context.Background()
	started := progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"}
	succeeded := progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"ok"`)}
	failed := progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "failed"}
	lease := func() *queue.Lease {
		t.Helper()
		id, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		require.Equal(t, id, leases[0].Task.ID)
		return leases[0]
	}
	// Warm up: load the scripts.
	l := lease()
	_, err := b.AppendTask(ctx, l.Task, started)
	require.NoError(t, err)
	_, _, err = b.AppendAndAck(ctx, l, succeeded)
	require.NoError(t, err)
	warm := l.Task.ID

	acked, appended, running := lease(), lease(), lease()
	_, err = b.AppendTask(ctx, appended.Task, started)
	require.NoError(t, err)
	cut.armed.Store(true)
	_, ok, err := b.AppendAndAck(ctx, acked, started, succeeded)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = b.AppendTask(ctx, appended.Task, failed)
	require.NoError(t, err)
	_, err = b.AppendTask(ctx, running.Task, started)
	require.NoError(t, err)
	cut.armed.Store(false)

	assert.ElementsMatch(t, []string{warm, acked.Task.ID}, listedIDs(ctx, t, b, queue.ListOptions{State: progress.StateSuccess}))
	assert.ElementsMatch(t, []string{appended.Task.ID}, listedIDs(ctx, t, b, queue.ListOptions{State: progress.StateFailure}))
	assert.ElementsMatch(t, []string{running.Task.ID}, listedIDs(ctx, t, b, queue.ListOptions{State: progress.StateProgress}))
	assert.ElementsMatch(t, []string{warm, acked.Task.ID}, listedIDs(ctx, t, b, queue.ListOptions{Flow: "f", State: progress.StateSuccess}))
	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	want := queue.StateCounts{Progress: 1, Success: 2, Failure: 1}
	assert.Equal(t, want, st.Counts)
	assert.Equal(t, want, flowCounts(st, "f"))
	assert.Equal(t, int64(2), st.LastMinute.Succeeded)
	assert.Equal(t, int64(1), st.LastMinute.Failed)
}

// assertListedAsItIs checks that task id, of flow, which exists, is
// listed in the state it is in, in every listing that selects it, and
// counted so, as the only task of b.
func assertListedAsItIs(ctx context.Context, t *testing.T, b *redisbackend.Backend, id, flow string) {
	t.Helper()
	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	state := snap.State
	assert.Equal(t, []string{id}, listedIDs(ctx, t, b, queue.ListOptions{State: state}), "listed as %s", state)
	assert.Equal(t, []string{id}, listedIDs(ctx, t, b, queue.ListOptions{Flow: flow, State: state}))
	st, err := b.TaskStats(ctx)
	require.NoError(t, err)
	var want queue.StateCounts
	switch state {
	case progress.StatePending:
		want.Pending = 1
	case progress.StateProgress:
		want.Progress = 1
	case progress.StateSuccess:
		want.Success = 1
	case progress.StateFailure:
		want.Failure = 1
	}
	assert.Equal(t, want, st.Counts, "counted as %s", state)
	assert.Equal(t, []string{id}, listedIDs(ctx, t, b, queue.ListOptions{}))
}

// TestClusterStartCutAnywhereIsListed cuts a start on a Redis Cluster
// client at every point of the round trip that queues its task (after
// its record), then at every point of the round trip in which the sweep
// of cut starts forgets the starts it ended: whatever the point, the task
// is never listed before it exists, and once a sweep has run, it is
// listed and counted in the state it is in. (The index entry once
// followed the commands that queue the task and mark its start done, and
// the sweep's once followed its removal from the starting set: a task cut
// between them stayed unlisted, queued or ended.)
func TestClusterStartCutAnywhereIsListed(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := context.Background()
	for _, at := range []string{"XADD", "ZREM"} {
		for keep := 0; ; keep++ {
			cut := &cutClient{Client: newClusterClient(t, c), at: at, keep: keep}
			b := newBackend(t, cut, redisbackend.Config{})
			redisbackend.SetCutAfter(b, 0)
			broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
			var id string
			if at == "XADD" {
				// The hook only tells the id: the start fails if its
				// queue entry or its mark of done is cut.
				redisbackend.SetCutStart(b, func(got string) error { id = got; return nil })
				cut.armed.Store(true)
				_, _ = broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
				redisbackend.SetCutStart(b, nil)
				require.NotEmpty(t, id)
			} else {
				// The start is cut before its queue entry; the sweep
				// that ends it is cut.
				var err error
				id, err = cutStart(t, b, func() error {
					_, err := broker.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
					return err
				})
				require.ErrorIs(t, err, errCut)
				cut.armed.Store(true)
				_, _ = b.EndCutStarts(ctx) // fails where its ZREM is cut
			}
			require.False(t, cut.armed.Load(), "the round trip with %s came", at)
			if ids := listedIDs(ctx, t, b, queue.ListOptions{}); len(ids) > 0 {
				_, err := b.Get(ctx, id)
				require.NoError(t, err, "a task listed exists")
			}
			_, err := b.EndCutStarts(ctx)
			require.NoError(t, err)
			assertListedAsItIs(ctx, t, b, id, "f")
			if cut.cuts.Load() == 0 {
				break // nothing was cut: every point is done
			}
		}
	}
}

// TestEnqueueCutAnywhereIsListedOnceQueued cuts Backend.Enqueue on a
// single Redis (the second step of a start in two, after the store's
// Create: a queue.Broker takes it for a task whose progress another store
// keeps, or with an idempotency key where one step is not offered) at
// every point of its round trip: a task queued is listed, and a task
// listed has its record. (The index entry once followed the stream entry:
// a task cut in between ran unlisted. Enqueue is now one script there.)
func TestEnqueueCutAnywhereIsListedOnceQueued(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	for keep := 0; ; keep++ {
		cut := &cutClient{Client: newClient(t, srv), at: "*", keep: keep}
		b := newBackend(t, cut, redisbackend.Config{})
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		cut.armed.Store(true)
		_ = b.Enqueue(ctx, task) // fails where it is cut
		require.False(t, cut.armed.Load(), "the round trip of Enqueue came")
		depth, err := b.Depth(ctx)
		require.NoError(t, err)
		listed := listedIDs(ctx, t, b, queue.ListOptions{})
		if depth.Ready > 0 {
			assert.Equal(t, []string{task.ID}, listed, "a task queued is listed (cut after %d commands)", keep)
			assert.Equal(t, []string{task.ID}, listedIDs(ctx, t, b, queue.ListOptions{Flow: task.Flow}))
		}
		if len(listed) > 0 {
			_, err := b.Get(ctx, task.ID)
			require.NoError(t, err, "a task listed has its record")
		}
		if cut.cuts.Load() == 0 {
			return // nothing was cut: every point is done
		}
	}
}

// TestClusterRequeueCutAnywhereIsListed cuts a re-queue on a Redis
// Cluster client at every point of the round trip of its script (after
// the new task's record): the new task is never listed before it
// exists, and once a sweep has run, it is listed in the state it is in.
// Its record's round trip cut where the queue's node gets its part and
// the task's node does not, nothing of the new task is listed or counted.
// (Its entry once went with its record, to another node, which may apply
// it first: a process dead then left an entry with no task, counted as
// PENDING until a listing met it.)
func TestClusterRequeueCutAnywhereIsListed(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := context.Background()
	t.Run("record", func(t *testing.T) {
		cut := &cutClient{Client: newClusterClient(t, c), at: "HSET", queueOnly: true}
		b := newBackend(t, cut, redisbackend.Config{})
		broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
		dead := buried(ctx, t, b, broker, "f")
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		before, err := b.TaskStats(ctx)
		require.NoError(t, err)
		cut.armed.Store(true)
		require.Error(t, b.Requeue(ctx, dead, task))
		require.False(t, cut.armed.Load(), "the record's round trip came")
		require.Positive(t, cut.cuts.Load())
		st, err := b.TaskStats(ctx)
		require.NoError(t, err)
		assert.Equal(t, before.Counts, st.Counts, "the new task, never recorded, is not counted")
		assert.Equal(t, []string{dead}, listedIDs(ctx, t, b, queue.ListOptions{}))
	})
	for keep := 0; ; keep++ {
		cut := &cutClient{Client: newClusterClient(t, c), at: "EVALSHA", keep: keep}
		b := newBackend(t, cut, redisbackend.Config{})
		redisbackend.SetCutAfter(b, 0)
		broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("f")})
		dead := buried(ctx, t, b, broker, "f")
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		cut.armed.Store(true)
		_ = b.Requeue(ctx, dead, task) // fails where its script is cut
		require.False(t, cut.armed.Load(), "the round trip with the script came")
		if slices.Contains(listedIDs(ctx, t, b, queue.ListOptions{}), task.ID) {
			_, err := b.Get(ctx, task.ID)
			require.NoError(t, err, "a task listed exists")
		}
		_, err := b.EndCutStarts(ctx)
		require.NoError(t, err)
		snap, _, err := b.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		assert.Contains(t, listedIDs(ctx, t, b, queue.ListOptions{State: snap.State}), task.ID, "listed as %s (cut after %d commands)", snap.State, keep)
		assert.Contains(t, listedIDs(ctx, t, b, queue.ListOptions{Flow: "f", State: snap.State}), task.ID)
		if cut.cuts.Load() == 0 {
			return // nothing was cut: every point is done
		}
	}
}
