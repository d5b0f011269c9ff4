package redisbackend_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// The tests of how a Fetch waits for work with what its worker's last
// Fetch learnt (its plan), and sends its XREAD and its script together.

// TestCancelledFetchEndsItsWait checks that a Fetch waiting for work
// ends its wait as soon as its context is cancelled, with an entry of the
// wake stream (not when its wait of up to a second times out), and
// leaves nothing leased behind.
func TestCancelledFetchEndsItsWait(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &wakeClient{Client: newClient(t, srv), waiting: make(chan struct{})}
	b := newBackend(t, client, redisbackend.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		leases []*queue.Lease
		err    error
	}
	done := make(chan result, 1)
	go func() {
		leases, err := b.Fetch(ctx, "waiting", 1, time.Minute)
		done <- result{leases, err}
	}()
	// Its first look finds nothing; then it waits.
	waitFor(t, client.waiting, "the Fetch did not wait")
	cancel()
	r := <-done
	require.ErrorIs(t, r.err, context.Canceled)
	assert.Empty(t, r.leases)
	assert.True(t, client.woken.Load(), "the wait ended when its context was cancelled, not when it would have")

	task := newTask()
	require.NoError(t, b.Enqueue(context.Background(), task))
	leases, err := b.Fetch(context.Background(), "other", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1, "the task went to the Fetch that asked, not the cancelled one")
	assert.Equal(t, task.ID, leases[0].Task.ID)
}

// wakeClient tells when a Fetch through it first waits (sends its XREAD)
// and whether a wait ended on an entry of the wake stream (see Fetch).
type wakeClient struct {
	rueidis.Client
	waiting chan struct{}
	once    sync.Once
	woken   atomic.Bool
}

func (c *wakeClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	args := cmds[0].Commands()
	if len(args) < 3 || args[0] != "XREAD" {
		return c.Client.DoMulti(ctx, cmds...)
	}
	// Read before the round trip, which recycles the command.
	wake := args[len(args)-3] // XREAD ... STREAMS stream wake lastID wakeID
	c.once.Do(func() { close(c.waiting) })
	res := c.Client.DoMulti(ctx, cmds...)
	if got, err := res[0].AsXRead(); err == nil && len(got[wake]) > 0 {
		c.woken.Store(true)
	}
	return res
}

// cancellingClient cancels a context once, when the first script sent
// after arm reaches Redis: the script runs, and then the context that sent
// it ends while its answer is on its way back, as when a worker stops
// during a Fetch's look. A call whose own context has ended then gets
// that error, not the answer, as from rueidis.
type cancellingClient struct {
	rueidis.Client
	cancel func()
	armed  atomic.Bool
}

func (c *cancellingClient) arm(cancel func()) { c.cancel = cancel; c.armed.Store(true) }

func (c *cancellingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	if args := cmd.Commands(); len(args) == 0 || args[0] != "EVALSHA" || !c.armed.CompareAndSwap(true, false) {
		return c.Client.Do(ctx, cmd)
	}
	res := c.Client.Do(context.WithoutCancel(ctx), cmd)
	c.cancel()
	if err := ctx.Err(); err != nil {
		return rueidis.NewErrorResult(err)
	}
	return res
}

// TestFetchCancelledInItsLookKeepsWhatItTook cancels a Fetch that looks
// at once (no wait, as a worker's first Fetch or one after a full look
// was due) while its script is on its way: the script leased the task,
// and Fetch returns that lease although its context has ended, rather
// than an error that leaves the task held by no one until its lease
// passes (a worker stopped then would hold up a retried task for the
// whole lease).
func TestFetchCancelledInItsLookKeepsWhatItTook(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &cancellingClient{Client: newClient(t, srv)}
	b := newBackend(t, client, redisbackend.Config{})
	runTask(context.Background(), t, b) // loads the scripts

	task := newTask()
	require.NoError(t, b.Enqueue(context.Background(), task))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client.arm(cancel)
	leases, err := b.Fetch(ctx, "stopping", 1, time.Minute)
	require.Error(t, ctx.Err(), "the context ended during the look")
	require.Len(t, leases, 1, "what the look leased is returned (err %v)", err)
	assert.Equal(t, task.ID, leases[0].Task.ID)
}

// TestWaitingFetchTakesATaskDelayedPastItsPlan checks that a Fetch that
// waits with what an earlier Fetch learnt of the queue does not miss a
// task delayed meanwhile to beyond that plan's second (no wake-up is sent
// for it): the task is taken when it is due. The first wait is the
// plan's, which knows nothing of the task (it is due 1.2 s in, after the
// plan's second); the look that ends it must see the task, and every
// wait after it end by when the task is due (see assertWaitsEndBy), where
// a Fetch that missed it would wait another plan's second.
func TestWaitingFetchTakesATaskDelayedPastItsPlan(t *testing.T) {
	t.Parallel()
	ctx, srv, b, waits := waitingWorker(t, 2)

	later := newTask()
	later.RunAt = time.Now().Add(1200 * time.Millisecond)
	require.NoError(t, b.Enqueue(ctx, later))
	due := delayedScore(t, srv, b, later.ID)
	waits.reset()
	start := serverMS(t, srv)
	leases, err := b.Fetch(ctx, "w", 2, time.Minute)
	taken := time.Now()
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, later.ID, leases[0].Task.ID)
	assert.False(t, taken.Before(later.RunAt.Add(-2*time.Millisecond)), "taken before it was due")
	blocks := waits.blocks()
	require.NotEmpty(t, blocks, "the Fetch waited for the plan's end")
	assertWaitsEndBy(t, start+blocks[0], blocks[1:], due)
}

// assertWaitsEndBy checks that waits (the BLOCK, in ms, of the XREADs a
// Fetch sent, in order), laid end to end from from (the Redis server's
// clock, Unix ms), all end by due: each was planned by a look that saw
// the task due then. A look runs at the earliest when the XREAD before
// it has blocked for its whole BLOCK (nothing arrives to end it sooner in
// these tests), so however slow the machine, such a look saw the task
// due in due-from ms at most, and planned its wait no longer: only a
// wait planned without the task (a second, with nothing else due) ends
// past it. Nothing here measures how long anything took.
func assertWaitsEndBy(t *testing.T, from int64, waits []int64, due int64) {
	t.Helper()
	end := from
	for i, ms := range waits {
		end += ms
		assert.LessOrEqual(t, end, due, "wait %d of %d (%d ms; all of them %v) ends %d ms after the task is due, as the plan of a look that did not see it",
			i+1, len(waits), ms, waits, end-due)
	}
}

// waitClient records the BLOCK of each XREAD sent through it: how long,
// in ms, a Fetch waits at most for an entry (see Fetch).
type waitClient struct {
	rueidis.Client
	mu   sync.Mutex
	sent []int64
}

func (c *waitClient) record(cmd rueidis.Completed) {
	args := cmd.Commands()
	if len(args) < 3 || args[0] != "XREAD" {
		return
	}
	for i := 1; i+1 < len(args); i++ {
		if strings.EqualFold(args[i], "BLOCK") {
			ms, err := strconv.ParseInt(args[i+1], 10, 64)
			if err != nil {
				panic(fmt.Sprintf("XREAD BLOCK %q", args[i+1]))
			}
			c.mu.Lock()
			c.sent = append(c.sent, ms)
			c.mu.Unlock()
		}
	}
}

func (c *waitClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.record(cmd) // before the round trip, which recycles the command
	return c.Client.Do(ctx, cmd)
}

func (c *waitClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	for _, cmd := range cmds {
		c.record(cmd)
	}
	return c.Client.DoMulti(ctx, cmds...)
}

// reset forgets the waits so far.
func (c *waitClient) reset() { c.mu.Lock(); c.sent = nil; c.mu.Unlock() }

// blocks returns the waits since the last reset, in the order sent.
func (c *waitClient) blocks() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// serverMS returns the Redis server's clock, in Unix ms, as its TIME
// tells it (the fetch script's clock).
func serverMS(t *testing.T, srv *redistest.Server) int64 {
	t.Helper()
	parts, err := srv.Do("TIME").AsStrSlice()
	require.NoError(t, err)
	require.Len(t, parts, 2)
	sec, err := strconv.ParseInt(parts[0], 10, 64)
	require.NoError(t, err)
	usec, err := strconv.ParseInt(parts[1], 10, 64)
	require.NoError(t, err)
	return sec*1000 + usec/1000
}

// delayedScore returns when the delayed task id is due, in Unix ms by the
// Redis server's clock: its score in the queue's delayed set.
func delayedScore(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, id string) int64 {
	t.Helper()
	score, err := srv.Do("ZSCORE", b.Prefix()+":{q:default}:delayed", id).AsFloat64()
	require.NoError(t, err)
	return int64(score)
}

// TestLookNearTheEndOfItsQuickTimeIsFull checks that a look that ends a
// wait in the last quarter of the time its plan allows quick looks (here
// all of that time: it ends when a task delayed by 200 ms is due) is
// full: it takes a task that became due without a wake-up (its score in
// the delayed set lowered behind the backend's back, as a task delayed by
// another broker to beyond a second becomes due), which a quick look
// leaves alone.
func TestLookNearTheEndOfItsQuickTimeIsFull(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	soon := newTask()
	soon.RunAt = time.Now().Add(200 * time.Millisecond)
	require.NoError(t, b.Enqueue(ctx, soon))
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "w", 4, time.Minute) // a full look, and a plan until soon is due
	require.NoError(t, err)
	require.Len(t, first, 1)

	hidden := enqueueDueUnannounced(ctx, t, srv, b)
	next := newTask()
	require.NoError(t, b.Enqueue(ctx, next))
	leases, err := b.Fetch(ctx, "w", 4, time.Minute) // its wait ends at once
	require.NoError(t, err)
	var ids []string
	for _, l := range leases {
		ids = append(ids, l.Task.ID)
	}
	assert.Contains(t, ids, next.ID)
	assert.Contains(t, ids, hidden.ID, "a full look: the task due was taken with the new one")
}

// waitingWorker starts a Redis and a backend on it, enqueues a task and
// has worker "w" take it with a Fetch of up to max tasks: a full look,
// which plans the worker's next wait (quick looks for a second when
// nothing else is due). The backend's client records the waits of its
// Fetches. The context ends after waitLimit.
func waitingWorker(t *testing.T, max int) (context.Context, *redistest.Server, *redisbackend.Backend, *waitClient) {
	t.Helper()
	srv := redistest.Start(t)
	waits := &waitClient{Client: newClient(t, srv)}
	b := newBackend(t, waits, redisbackend.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	require.NoError(t, b.Enqueue(ctx, newTask()))
	first, err := b.Fetch(ctx, "w", max, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 1)
	return ctx, srv, b, waits
}

// enqueueDueUnannounced enqueues a task delayed by an hour, then makes it
// due behind the backend's back (its score in the delayed set lowered),
// as a task delayed by another broker to beyond a second becomes due: no
// wake-up says so, and only a full look takes it.
func enqueueDueUnannounced(ctx context.Context, t *testing.T, srv *redistest.Server, b *redisbackend.Backend) *queue.Task {
	t.Helper()
	task := newTask()
	task.RunAt = time.Now().Add(time.Hour)
	require.NoError(t, b.Enqueue(ctx, task))
	require.NoError(t, srv.Do("ZADD", b.Prefix()+":{q:default}:delayed", "XX", "1", task.ID).Error())
	return task
}

// TestALookEarlyInItsQuickTimeIsQuick is the counterpart of
// TestLookNearTheEndOfItsQuickTimeIsFull: with nothing due for an hour,
// the plan allows quick looks for a second, and a look that ends a wait
// at its start leaves the delayed set alone.
func TestALookEarlyInItsQuickTimeIsQuick(t *testing.T) {
	t.Parallel()
	ctx, srv, b, _ := waitingWorker(t, 4)

	hidden := enqueueDueUnannounced(ctx, t, srv, b)
	next := newTask()
	require.NoError(t, b.Enqueue(ctx, next))
	leases, err := b.Fetch(ctx, "w", 4, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1, "a quick look: the new task only")
	assert.Equal(t, next.ID, leases[0].Task.ID)

	leases, err = b.Fetch(ctx, "w", 4, time.Minute) // the next full look takes it, within a second
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, hidden.ID, leases[0].Task.ID)
}

// TestFetchKeepsWhatItsScriptLeasedWhenTheWaitFails breaks the wake
// stream's key (a string where a stream should be), so that Redis refuses
// a waiting Fetch's XREAD but runs the script sent with it, which leases a
// task: Fetch returns that lease rather than the XREAD's error, which
// would leave the task held by no one until its lease passed.
func TestFetchKeepsWhatItsScriptLeasedWhenTheWaitFails(t *testing.T) {
	t.Parallel()
	ctx, srv, b, _ := waitingWorker(t, 2)

	require.NoError(t, srv.Do("SET", b.Prefix()+":{q:default}:wake", "not a stream").Error())
	task := newTask()
	require.NoError(t, b.Enqueue(ctx, task))
	leases, err := b.Fetch(ctx, "w", 2, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, task.ID, leases[0].Task.ID)
}

// TestQuickLookStillTakesADelayedTaskWhenDue has a worker take tasks one
// by one as they arrive, each in a quick look (which leaves the delayed
// set alone), while a task delayed by 100 ms is enqueued between two of
// them: the wake-up its enqueue sends makes the worker look at the
// delayed set, so the task is taken when it is due (every wait of the
// next Fetch ends by then, see assertWaitsEndBy), not when the plan of
// the look before would have looked again (a second after it).
func TestQuickLookStillTakesADelayedTaskWhenDue(t *testing.T) {
	t.Parallel()
	ctx, srv, b, waits := waitingWorker(t, 4)

	delayed := newTask()
	delayed.RunAt = time.Now().Add(100 * time.Millisecond)
	require.NoError(t, b.Enqueue(ctx, delayed))
	due := delayedScore(t, srv, b, delayed.ID)
	next := newTask()
	require.NoError(t, b.Enqueue(ctx, next))
	leases, err := b.Fetch(ctx, "w", 4, time.Minute) // ends the wait: a quick look
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, next.ID, leases[0].Task.ID)

	waits.reset()
	start := serverMS(t, srv)
	leases, err = b.Fetch(ctx, "w", 4, time.Minute)
	taken := time.Now()
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.Equal(t, delayed.ID, leases[0].Task.ID)
	assert.False(t, taken.Before(delayed.RunAt.Add(-2*time.Millisecond)), "taken before it was due")
	assertWaitsEndBy(t, start, waits.blocks(), due)
}
