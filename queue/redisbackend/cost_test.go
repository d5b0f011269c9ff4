package redisbackend_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// successes returns a function that waits until a task of prefix has
// recorded its SUCCESS. It listens on the task's live channel on a
// connection of its own (SSUBSCRIBE; shard channels have no patterns) and
// looks at the task's last event (LINDEX) in case the end came first. It
// costs Redis commands that the backend never sends (ssubscribe, lindex,
// sunsubscribe), which the counts below leave out.
func successes(t *testing.T, srv *redistest.Server, prefix string) func(id string) {
	t.Helper()
	client := newClient(t, srv)
	return func(id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		done := make(chan struct{}, 1)
		subscribed := make(chan struct{}, 1)
		signal := func(ch chan struct{}) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() {
			hooked := rueidis.WithOnSubscriptionHook(ctx, func(rueidis.PubSubSubscription) { signal(subscribed) })
			_ = client.Receive(hooked, client.B().Ssubscribe().Channel(prefix+":{"+id+"}:live").Build(), func(m rueidis.PubSubMessage) {
				if strings.Contains(m.Message, `"state":"SUCCESS"`) {
					signal(done)
				}
			})
		})
		select {
		case <-subscribed:
		case <-ctx.Done():
			require.FailNow(t, "no subscription to the task's channel", id)
		}
		last, err := client.Do(ctx, client.B().Lindex().Key(prefix+":{"+id+"}:events").Index(-1).Build()).ToString()
		if err == nil && strings.Contains(last, `"state":"SUCCESS"`) {
			return
		}
		select {
		case <-done:
		case <-ctx.Done():
			require.FailNow(t, "task did not succeed in time", id)
		}
	}
}

// reportingFlow reports five progress events and returns, as the tasks of
// flowbench's throughput and rate scenarios do.
var reportingFlow = flow.Func(func(_ context.Context, t *flow.Task) (any, error) {
	for i := 1; i <= 5; i++ {
		t.Progress.Progress(i*100/6, "")
	}
	return "done", nil
})

// TestCostPerTaskAtLowRate runs tasks one at a time through a Broker and a
// Worker, as at a rate far below what the worker can take, where no two
// calls share a round trip, and counts what each task costs Redis: the
// client's round trips and the commands Redis runs (INFO commandstats,
// script internals included). A task takes three round trips (create and
// enqueue, fetch, record the end and acknowledge), three scripts run by
// their SHA-1, one blocking read (in the fetch's round trip), no
// bookkeeping of the stream's trim per acknowledgement, and no look at
// the delayed set or the leases: the fetch that ends a wait is quick,
// and a full one comes about once a second, as the worker's heartbeat
// does; both are counted apart.
func TestCostPerTaskAtLowRate(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Record: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{})
	reg := registry.New()
	reg.MustRegister("report", reportingFlow)
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	succeeded := successes(t, srv, b.Prefix())
	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Concurrency: 8, Logger: quiet}))
	ctx := context.Background()
	run := func() {
		t.Helper()
		id, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		succeeded(id)
	}
	for range 3 {
		run() // loads the scripts
	}
	// and the append script, should the start go on its own below
	warm, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	succeeded(warm)
	_, err = b.Append(ctx, warm, progress.LogEvent("late"))
	require.ErrorIs(t, err, progress.ErrFinished)

	const tasks = 40
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	before := counter.Trips()
	for range tasks {
		run()
	}
	// The worker's heartbeats, once a second, are as many as the seconds
	// the tasks took (more on a loaded machine): their round trips, each
	// one script, are counted apart.
	recorded := counter.Recorded(before)
	beatTrips := heartbeats(recorded)
	tripCount := len(recorded) - beatTrips
	trips := float64(tripCount) / tasks
	calls := commandCalls(t, srv)
	perTask := func(names ...string) float64 {
		n := 0
		for _, name := range names {
			n += calls[name]
		}
		return float64(n) / tasks
	}
	total := 0
	for name, n := range calls {
		switch name {
		case "config|resetstat", "info", "ssubscribe", "sunsubscribe", "lindex": // the test's own
		default:
			total += n
		}
	}
	// A flow's first events (with the start) go in an Append of their
	// own when the worker's reporter sends them before the flow has
	// returned, which depends on scheduling: that Append costs a round
	// trip, a script and seven commands (two of them ZADDs into the task
	// index; no TIME), and publishes once, as the end does. They are
	// counted apart.
	separate := calls["spublish"] - tasks
	extra := float64(separate) / tasks
	t.Logf("per task: %.2f round trips (%d heartbeats apart), %.2f commands, %.2f separate Appends: %v", trips, beatTrips, float64(total)/tasks, extra, calls)

	// What comes once a second whatever the rate: the worker's
	// heartbeat (a script of eight commands, one of them its ZSCORE, one
	// a ZRANGEBYSCORE of the leases of the layout before, see
	// lua/lib/legacy.lua) and
	// its full looks at the queue (two ZRANGEs, and an XREVRANGE when one
	// ends a wait with nothing), and every ten seconds the sweep of cut
	// starts in a heartbeat's round trip (a ZREMRANGEBYSCORE and a
	// ZRANGEBYSCORE, see starts.go) and in its script an XPENDING for
	// entries pending with no lease (see lua/lib/stray.lua), counted
	// with the trims below. Bounds with room for an idle worker's look,
	// once a second.
	beats := calls["zscore"]
	perSecond := 7*beats + calls["zrange"] + calls["xrevrange"] + calls["zremrangebyscore"] + calls["zrangebyscore"]
	assert.LessOrEqual(t, calls["zrange"], 2*(beats+2), "full looks at the delayed set and the leases come about once a second, as heartbeats do, not with every task")
	// Bounds on counts for all tasks are whole numbers: a float such as
	// 148/40-26/40 lands a hair above 3.05 and fails a bound it meets.
	assert.LessOrEqual(t, tripCount-separate, 3*tasks+4, "round trips for 40 tasks, at most 3.1 a task (there were five: an empty fetch and a wait of their own)")
	assert.Zero(t, calls["eval"], "no script sent whole: the create script too runs by its SHA-1")
	assert.LessOrEqual(t, calls["evalsha"]-separate-beatTrips, 3*tasks+2, "scripts for 40 tasks, at most 3.05 a task: create, fetch, finish")
	assert.LessOrEqual(t, perTask("xread"), 1.05, "one blocking read per task")
	// The release of a lease whose number is a multiple of a hundred
	// trims the stream, in three commands. A lease's number is the
	// server's clock in ms: one lease in a hundred on average, but 0, 1
	// or 2 of these 40 depending on when they run; every release would
	// be 40.
	trims := calls["xpending"] + calls["xinfo|groups"] + calls["xtrim"]
	assert.LessOrEqual(t, calls["xtrim"], tasks/4, "trimming the stream is not an acknowledgement's work")
	// Four of them keep the task index (see ListTasks): a ZADD into the
	// queue's index and one into the flow's as the task is queued, and
	// again as it ends (its start goes with its end here).
	// A heartbeat makes two ZADDs, three after a gap in its beats (see
	// lua/heartbeat.lua).
	assert.LessOrEqual(t, calls["zadd"]-2*separate-3*beatTrips, 5*tasks+2, "ZADDs for 40 tasks, at most 5.05 a task: the lease's deadline and four into the task index")
	assert.Zero(t, calls["incrby"], "a lease's number is the server's clock, not a counter's")
	// The fetch reads the server's clock (TIME), and so does each
	// heartbeat; a task's create and end go by the caller's clock, and
	// read the server's only to move the expiry of its keys, which a
	// short task never does.
	assert.LessOrEqual(t, float64(calls["time"]-beats)/tasks, 1.05, "TIMEs per task: the fetch's only (there were three: the create's and the end's too)")
	// The trims are bounded above.
	// The create does not check that the task's id is free: the Broker
	// drew it (queue.NewID), and no other task can have it.
	assert.Zero(t, calls["exists"], "no EXISTS in the create of an id the Broker drew")
	// A lease is one member of the leases set, its token: no holders
	// hash to write in the fetch (HSET) and to read and clear in the end
	// (HMGET, HDEL), whose ZREM of the token is its check.
	assert.Zero(t, calls["hdel"], "no holders hash to clear as a lease ends")
	assert.LessOrEqual(t, calls["hmget"]-separate, 2*tasks+1, "HMGETs for 40 tasks, at most 2.03 a task: the fetch's read of the record and the end's, none of a holders hash")
	assert.LessOrEqual(t, total-perSecond-trims-7*separate, 23*tasks+2, "commands for 40 tasks, at most 23.05 a task (there were 40, and 28 without the task index; 32 with two ZRANGEs in every fetch, 30 with an INCRBY numbering each lease, 29 with a TIME in the create and the end, 27 with an EXISTS in the create, 26 with the holders hash)")
}

// TestWorkersWokenInVainLookLittle runs tasks one at a time through
// four workers on one queue: each new task ends the wait of all four,
// and the three that find it taken look no further than the new entries
// (no XREVRANGE for the stream's newest entry, which their wait told
// them). What remains is the full looks, about once a second per worker.
func TestWorkersWokenInVainLookLittle(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	reg := registry.New()
	reg.MustRegister("report", reportingFlow)
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	succeeded := successes(t, srv, b.Prefix())
	for i := range 4 {
		startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Name: "w" + strconv.Itoa(i), Registry: reg, Concurrency: 8, Logger: quiet}))
	}
	ctx := context.Background()
	run := func() {
		t.Helper()
		id, err := broker.Enqueue(ctx, "report", json.RawMessage(`{}`), queue.EnqueueOptions{})
		require.NoError(t, err)
		succeeded(id)
	}
	for range 3 {
		run()
	}
	const tasks = 40
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	start := time.Now()
	for range tasks {
		run()
	}
	calls := commandCalls(t, srv)
	t.Logf("%d tasks in %v: %d XREAD, %d XREVRANGE, %d ZRANGE", tasks, time.Since(start), calls["xread"], calls["xrevrange"], calls["zrange"])
	require.GreaterOrEqual(t, calls["xread"], 2*tasks, "the tasks woke several workers")
	// A full look sends two ZRANGEs (three when something was due), and
	// when it takes nothing, two XREVRANGEs: the newest ids of the stream
	// and of the wake stream, for the wait after it. A quick look sends
	// none. Full looks come about once a second per worker, so how many
	// there are depends on how long the run takes: none on an idle
	// machine, where the run takes well under a second; on a loaded one,
	// a round of four each second, three of which (the workers woken in
	// vain) send two XREVRANGEs each.
	assert.LessOrEqual(t, calls["xrevrange"], calls["zrange"], "XREVRANGEs come with full looks only, not with every worker a task wakes (there were %d tasks)", tasks)
}

// TestScriptsLostMidRunLoseNothing makes Redis forget its scripts (SCRIPT
// FLUSH, as a restart or a failover to a replica that never ran them
// would) again and again while tasks are enqueued, run and acknowledged:
// every script call may then fail with NOSCRIPT and be sent whole, and
// every task must still run exactly once and succeed, due at once or
// delayed.
func TestScriptsLostMidRunLoseNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	var mu sync.Mutex
	runs := map[string]int{}
	reg := registry.New()
	reg.MustRegister("count", flow.Func(func(_ context.Context, task *flow.Task) (any, error) {
		mu.Lock()
		runs[task.ID]++
		mu.Unlock()
		task.Progress.Status("counted")
		return nil, nil
	}))
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg})
	startWorker(t, queue.NewWorker(b, nil, queue.WorkerConfig{Registry: reg, Concurrency: 8, Logger: quiet}))

	stop := make(chan struct{})
	var flusher sync.WaitGroup
	flushes := 0
	flusher.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			assert.NoError(t, srv.Do("SCRIPT", "FLUSH").Error())
			flushes++
		}
	})
	ctx := context.Background()
	var ids []string
	for i := range 150 {
		var opts queue.EnqueueOptions
		if i%5 == 0 {
			opts.RunAt = time.Now().Add(20 * time.Millisecond)
		}
		id, err := broker.Enqueue(ctx, "count", json.RawMessage(`{}`), opts)
		require.NoError(t, err)
		ids = append(ids, id)
		time.Sleep(time.Millisecond)
	}
	for _, id := range ids {
		eventually(t, func() bool {
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			return snap.State.Terminal()
		}, "task "+id+" ends")
	}
	close(stop)
	flusher.Wait()
	require.Positive(t, flushes)
	require.Positive(t, commandCalls(t, srv)["eval"], "some scripts were sent whole after a flush")

	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		snap, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State, "task %s", id)
		assert.Equal(t, 1, runs[id], "task %s runs once", id)
	}
	dead, err := b.Dead(ctx, 0)
	require.NoError(t, err)
	assert.Empty(t, dead)
	assert.Zero(t, pendingEntries(t, srv, b.Prefix()), "no entry left leased")
}

// TestCostOfStartsInSteps counts what a start of a task of a limited flow
// and a re-queue of a dead task cost a single Redis, which takes them in
// steps (see starts.go): the client's round trips and the commands Redis
// runs (INFO commandstats, script internals included). Marking the start
// in the queue's starting set costs no round trip: a ZADD before the
// record, in its round trip, and one in the script that queues the task.
func TestCostOfStartsInSteps(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{})
	// One slot, which the first task of "limited" takes and keeps (it is
	// never leased): the admit script of each later start does the same
	// work.
	reg := withLimited()
	broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	ctx := context.Background()
	cost := func(op func()) (trips int64, commands int, calls map[string]int) {
		t.Helper()
		commands, calls = commandsOf(t, srv, func() {
			before := counter.Trips()
			op()
			trips = counter.Trips() - before
		})
		return trips, commands, calls
	}

	// Re-queues first: a dead task is leased from an empty stream.
	requeue := func(id string) func() {
		return func() {
			_, err := broker.Requeue(ctx, id)
			require.NoError(t, err)
		}
	}
	warm, dead := buried(ctx, t, b, broker, "f"), buried(ctx, t, b, broker, "f")
	requeue(warm)() // loads the scripts
	trips, commands, calls := cost(requeue(dead))
	t.Logf("a re-queue: %d round trips, %d commands: %v", trips, commands, calls)
	assert.Equal(t, int64(4), trips, "round trips: the dead task's record, the new task's progress, its record, then the dead-letter set and the queue")
	assert.Equal(t, 4, calls["zadd"], "ZADDs: two into the task index, two into the starting set (before the record, and done)")
	assert.LessOrEqual(t, commands, 19, "commands of a re-queue (17 before the starting set)")

	start := func() {
		_, err := broker.Enqueue(ctx, "limited", nil, queue.EnqueueOptions{})
		require.NoError(t, err)
	}
	for range 2 {
		start() // loads the scripts; the first takes the slot
	}
	trips, commands, calls = cost(start)
	t.Logf("a start of a limited flow: %d round trips, %d commands: %v", trips, commands, calls)
	assert.Equal(t, int64(2), trips, "round trips: the record, then the gate")
	assert.Equal(t, 5, calls["zadd"], "ZADDs: two into the task index, one into the gate, two into the starting set (before the record, and done)")
	assert.LessOrEqual(t, commands, 16, "commands of a start of a limited flow (14 before the starting set)")

	// On a cluster, round trips only: the starting set has one of its
	// own, before the record. A script that a master has not run yet is
	// sent whole again (EVAL), in a round trip not counted here: a task's
	// keys go to any master.
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	warmed := &warmCounter{Client: newClusterClient(t, c)}
	b = newBackend(t, warmed, redisbackend.Config{})
	broker = queue.NewBroker(b, b, queue.BrokerConfig{Registry: reg})
	tripsOf := func(op func()) int64 {
		t.Helper()
		before := warmed.trips.Load()
		op()
		return warmed.trips.Load() - before
	}
	warm, dead = buried(ctx, t, b, broker, "f"), buried(ctx, t, b, broker, "f")
	require.NoError(t, b.Requeue(ctx, warm, newTask())) // loads the script
	assert.Equal(t, int64(3), tripsOf(func() { require.NoError(t, b.Requeue(ctx, dead, newTask())) }),
		"Backend.Requeue on a cluster: the starting set, the record, then the dead-letter set and the queue")
	start()
	assert.Equal(t, int64(2), tripsOf(start), "a start of a limited flow on a cluster: the starting set and the record, then the gate")
}

// warmCounter counts round trips as redistrips.Client does, but those of a
// script sent whole (EVAL, after a NOSCRIPT).
type warmCounter struct {
	rueidis.Client
	trips atomic.Int64
}

func (c *warmCounter) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	if !strings.EqualFold(cmd.Commands()[0], "EVAL") {
		c.trips.Add(1)
	}
	return c.Client.Do(ctx, cmd)
}

func (c *warmCounter) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	c.trips.Add(1)
	return c.Client.DoMulti(ctx, cmds...)
}
