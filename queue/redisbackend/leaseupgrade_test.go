package redisbackend_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// legacy plays the workers of the version before the one lease
// structure: it runs that version's scripts (testdata/legacy), which
// keep a lease as its entry id in the leases set and its number in the
// holders hash, on the queue "default" of prefix.
type legacy struct {
	t      *testing.T
	srv    *redistest.Server
	prefix string
}

func (o legacy) key(name string) string { return o.prefix + ":{q:default}:" + name }

func (o legacy) eval(name string, keys []string, args ...string) rueidis.RedisResult {
	o.t.Helper()
	src, err := os.ReadFile("testdata/legacy/" + name)
	require.NoError(o.t, err)
	cmd := append([]string{"EVAL", string(src), strconv.Itoa(len(keys))}, keys...)
	return o.srv.Do(append(cmd, args...)...)
}

func (o legacy) leaseKeys() []string {
	return []string{o.key("stream"), o.key("leases"), o.key("holders")}
}

// fetch leases one entry to worker for lease as that version's fetch
// did (as a Cluster client, reading no record), and returns its id and
// token, or "" when it took nothing.
func (o legacy) fetch(worker string, lease time.Duration) (entry, token string) {
	o.t.Helper()
	keys := []string{o.key("stream"), o.key("delayed"), o.key("leases"), o.key("holders"), o.key("wake"), o.key("delayed:hooks")}
	reply, err := o.eval("fetch.lua", keys, "workers", worker, "1", strconv.FormatInt(lease.Milliseconds(), 10), "100",
		"", "0", "", "", "1000").ToArray()
	require.NoError(o.t, err)
	taken, err := reply[0].ToArray()
	require.NoError(o.t, err)
	if len(taken) == 0 {
		return "", ""
	}
	one, err := taken[0].ToArray()
	require.NoError(o.t, err)
	entry, _ = one[0].ToString()
	token, _ = one[2].ToString()
	return entry, token
}

// ack acknowledges a lease as that version's Ack did: true if it was
// still held.
func (o legacy) ack(entry, token string) bool {
	o.t.Helper()
	reply, err := o.eval("ack.lua", o.leaseKeys(), "workers", entry, token, "").AsIntSlice()
	require.NoError(o.t, err)
	return reply[0] == 1
}

// extend extends a lease as that version's Extend did: true if it was
// still held.
func (o legacy) extend(entry, token string) bool {
	o.t.Helper()
	n, err := o.eval("extend.lua", o.leaseKeys(), entry, token, "3600000").AsInt64()
	require.NoError(o.t, err)
	return n == 1
}

// heartbeat beats for worker as that version's heartbeat did, judging
// the others once in contact for window.
func (o legacy) heartbeat(worker string, window time.Duration) {
	o.t.Helper()
	keys := []string{o.key("workers"), o.key("workers:seen"), o.key("workers:deadlines"), o.key("stream"),
		o.key("leases"), o.key("holders"), o.key("wake"), o.key("workers:contact")}
	require.NoError(o.t, o.eval("heartbeat.lua", keys, worker, `{"name":"`+worker+`"}`,
		strconv.FormatInt(window.Milliseconds(), 10), "workers", "1000").Error())
}

// fetchWithin fetches one task for worker, waiting at most d: nil when
// none came.
func fetchWithin(t *testing.T, b *redisbackend.Backend, worker string, lease, d time.Duration) *queue.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	leases, err := b.Fetch(ctx, worker, 1, lease)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

// TestUpgradeFromHoldersHash runs the workers of this version beside
// those of the version before (its scripts, on the same real Redis), as
// a rolling deploy does: a lease the old version took stays its
// worker's until it ends it or the lease lapses or its worker is found
// dead; then a worker of this version takes the task over, and the old
// worker is fenced off. An old worker's fetch never takes or drops a
// lease of this version.
func TestUpgradeFromHoldersHash(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	setup := func(t *testing.T) (*redisbackend.Backend, legacy, *queue.Task) {
		b := newBackend(t, newClient(t, srv), redisbackend.Config{})
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		require.NoError(t, b.Enqueue(ctx, task))
		return b, legacy{t: t, srv: srv, prefix: b.Prefix()}, task
	}

	t.Run("an old worker ends its own lease", func(t *testing.T) {
		b, old, _ := setup(t)
		entry, token := old.fetch("old", time.Hour)
		require.NotEmpty(t, entry)
		d, err := b.Depth(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(1), d.Running, "Depth counts a lease of the old layout")
		require.NoError(t, b.Heartbeat(ctx, queue.WorkerInfo{Name: "new", Heartbeat: time.Hour}))
		assert.Nil(t, fetchWithin(t, b, "new", time.Hour, 50*time.Millisecond), "a held old lease is not taken")
		assert.True(t, old.extend(entry, token), "the old worker extends its lease")
		assert.True(t, old.ack(entry, token), "the old worker acknowledges its lease")
		assert.Zero(t, pendingEntries(t, srv, b.Prefix()))
	})

	t.Run("a lapsed old lease is taken over and its old worker fenced", func(t *testing.T) {
		b, old, task := setup(t)
		entry, token := old.fetch("old", time.Millisecond)
		require.NotEmpty(t, entry)
		time.Sleep(5 * time.Millisecond)
		// A heartbeat of this version moves the lapsed lease into the
		// new leases set.
		require.NoError(t, b.Heartbeat(ctx, queue.WorkerInfo{Name: "new", Heartbeat: time.Hour}))
		l := fetchWithin(t, b, "new", time.Hour, waitLimit)
		require.NotNil(t, l)
		assert.Equal(t, task.ID, l.Task.ID)
		assert.Equal(t, queue.EndLeaseExpired, l.Task.PreviousEnd)
		assert.False(t, old.extend(entry, token), "the old worker's Extend")
		assert.False(t, old.ack(entry, token), "the old worker's Ack")
		n, err := srv.Do("EXISTS", old.key("leases"), old.key("holders")).AsInt64()
		require.NoError(t, err)
		assert.Zero(t, n, "nothing left in the old layout")
		require.NoError(t, b.Extend(ctx, l, time.Hour))
		require.NoError(t, b.Ack(ctx, l))
		assert.Zero(t, pendingEntries(t, srv, b.Prefix()))
	})

	t.Run("a dead old worker's lease is taken back at once", func(t *testing.T) {
		b, old, task := setup(t)
		ghost := queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}
		require.NoError(t, b.Heartbeat(ctx, ghost))
		entry, token := old.fetch("ghost", time.Hour)
		require.NotEmpty(t, entry)
		judge := queue.WorkerInfo{Name: "judge", Heartbeat: 100 * time.Millisecond}
		var l *queue.Lease
		eventually(t, func() bool {
			require.NoError(t, b.Heartbeat(ctx, judge))
			l = fetchWithin(t, b, "judge", time.Hour, 20*time.Millisecond)
			return l != nil
		}, "the dead old worker's lease was not taken back")
		assert.Equal(t, task.ID, l.Task.ID)
		assert.Equal(t, queue.EndWorkerLost, l.Task.PreviousEnd)
		assert.False(t, old.extend(entry, token), "the dead worker's Extend")
		assert.False(t, old.ack(entry, token), "the dead worker's Ack")
		require.NoError(t, b.Ack(ctx, l))
		assert.Zero(t, pendingEntries(t, srv, b.Prefix()))
	})

	t.Run("an old worker's fetch leaves a new lease alone", func(t *testing.T) {
		b, old, task := setup(t)
		first := fetchWithin(t, b, "new", time.Millisecond, waitLimit)
		require.NotNil(t, first)
		time.Sleep(5 * time.Millisecond)
		entry, _ := old.fetch("old", time.Hour)
		assert.Empty(t, entry, "the old worker takes no lease of this version")
		l := fetchWithin(t, b, "new", time.Hour, waitLimit)
		require.NotNil(t, l, "the lapsed lease is still there to take over")
		assert.Equal(t, task.ID, l.Task.ID)
		assert.Equal(t, queue.EndLeaseExpired, l.Task.PreviousEnd)
		assert.ErrorIs(t, b.Ack(ctx, first), queue.ErrLeaseLost, "the lapsed lease")
		require.NoError(t, b.Ack(ctx, l))
		assert.Zero(t, pendingEntries(t, srv, b.Prefix()))
	})

	t.Run("an old worker's judgement leaves a new lease held", func(t *testing.T) {
		// The old version finds no holder for a lease of this one: it
		// marks nothing, and the dead worker's lease waits out its
		// deadline, still fenced.
		b, old, task := setup(t)
		ghost := queue.WorkerInfo{Name: "ghost", Heartbeat: 10 * time.Millisecond}
		require.NoError(t, b.Heartbeat(ctx, ghost))
		first := fetchWithin(t, b, "ghost", 300*time.Millisecond, waitLimit)
		require.NotNil(t, first)
		window := 50 * time.Millisecond
		for range 4 {
			old.heartbeat("judge", window)
			time.Sleep(window / 3)
		}
		var l *queue.Lease
		eventually(t, func() bool {
			l = fetchWithin(t, b, "new", time.Hour, 20*time.Millisecond)
			return l != nil
		}, "the lease was not taken over once it lapsed")
		assert.Equal(t, task.ID, l.Task.ID)
		assert.ErrorIs(t, b.Ack(ctx, first), queue.ErrLeaseLost, "the dead worker's lease")
		require.NoError(t, b.Ack(ctx, l))
	})
}
