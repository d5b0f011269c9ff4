package redisbackend_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redisproc"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// These tests run on a real Redis Cluster of three masters.

// nodeClients returns the connections of the cluster node at addr, each
// as its CLIENT LIST fields.
func nodeClients(t *testing.T, addr string) []map[string]string {
	t.Helper()
	list, err := redisproc.DoString(addr, "CLIENT", "LIST")
	require.NoError(t, err)
	return parseClientList(list)
}

// shardSubscribers returns, for each master, the connections subscribed
// to shard channels and the number of channels each holds.
func shardSubscribers(t *testing.T, c *redistest.Cluster) map[string][]int {
	t.Helper()
	masters, err := c.Masters()
	require.NoError(t, err)
	out := map[string][]int{}
	for _, m := range masters {
		for _, cl := range nodeClients(t, m.Addr) {
			if n, _ := strconv.Atoi(cl["ssub"]); n > 0 {
				out[m.Addr] = append(out[m.Addr], n)
			}
		}
	}
	return out
}

// slotOwner returns the master that serves the slot of key.
func slotOwner(t *testing.T, c *redistest.Cluster, key string) redisproc.ClusterNode {
	t.Helper()
	slot, err := c.SlotOf(key)
	require.NoError(t, err)
	owner, err := c.Owner(slot)
	require.NoError(t, err)
	return owner
}

func TestClusterLiveStreamsUseOneConnectionPerMaster(t *testing.T) {
	t.Parallel()
	const tasks, perTask, live = 90, 3, 4
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{})
	redisbackend.SetDeadChannels(b, 0, 0) // channels left go at once
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	cancels, err := b.Cancellations(ctx)
	require.NoError(t, err)
	taskIDs := make([]string, tasks)
	owners := map[string]bool{}
	for i := range taskIDs {
		taskIDs[i] = newTask().ID
		require.NoError(t, b.Create(ctx, taskIDs[i]))
		owners[slotOwner(t, c, taskIDs[i]).Addr] = true
	}
	require.Len(t, owners, 3, "the tasks are spread over every master")

	for _, id := range taskIDs {
		_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
	}
	results := subscribeEach(ctx, t, b, taskIDs, perTask)

	subs := shardSubscribers(t, c)
	total := 0
	for addr, conns := range subs {
		assert.Len(t, conns, 1, "one pub/sub connection to master %s", addr)
		total += conns[0]
	}
	assert.Len(t, subs, 3, "a connection to each master that serves a channel")
	assert.Equal(t, tasks+1, total, "one shard channel per task, and the queue's cancellation channel")

	finishEach(ctx, t, b, taskIDs, live, results)

	// A cancellation reaches the listener through the queue's master.
	require.NoError(t, b.Cancel(ctx, taskIDs[0]))
	select {
	case id := <-cancels:
		assert.Equal(t, taskIDs[0], id)
	case <-ctx.Done():
		require.FailNow(t, "no cancellation")
	}
	eventually(t, func() bool {
		subs := shardSubscribers(t, c)
		return len(subs) == 1 && len(subs[slotOwner(t, c, b.Prefix()+":{q:default}:cancel").Addr]) == 1
	}, "only the cancellation channel stays subscribed")
}

// TestClusterSubscriptionLeavesADemotedMaster subscribes a task's live
// channel through a hub whose slot map still names the master that served
// the task's slot, after that master gave every slot it had to another
// and so, as Redis does, turned itself into a replica of it. A replica
// takes SSUBSCRIBE for the slots of its master, and gets what its master
// publishes only once its master counts it as a replica: the hub must
// subscribe the channel on the master that serves the slot, not on the
// old master, and deliver the task's events from there.
func TestClusterSubscriptionLeavesADemotedMaster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	b := newBackend(t, newClusterClient(t, c), redisbackend.Config{})

	// The hub reads the slots: it listens for cancellations, on a
	// master that keeps its slots, until the test ends.
	listen, stopListening := context.WithCancel(context.Background())
	defer stopListening()
	_, err := b.Cancellations(listen)
	require.NoError(t, err)
	newMaster := slotOwner(t, c, b.Prefix()+":{q:default}:cancel")
	old := otherMasters(t, c, newMaster)[0]
	id := newTask().ID
	for slotOwner(t, c, id).ID != old.ID {
		id = newTask().ID
	}

	// Every slot of old moves to newMaster. Nothing the hub subscribed
	// moves, so its slot map still has old serving the task's slot.
	require.NoError(t, c.Reshard(old.ID, newMaster.ID, old.Slots))
	eventually(t, func() bool {
		role, err := redisproc.Do(old.Addr, "ROLE")
		return err == nil && role.([]any)[0] == "slave"
	}, "the master left without slots turns into a replica")

	// The guard against a hang starts here: the reshard (thousands of
	// slots, one at a time, by redis-cli) takes over a minute and a half
	// on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	defer cancel()
	require.NoError(t, b.Create(ctx, id))
	_, err = b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
	require.NoError(t, err)
	ch, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	select {
	case e := <-ch: // read after the channel was confirmed subscribed
		assert.Equal(t, "Started", e.Status)
	case <-ctx.Done():
		require.FailNow(t, "no backlog")
	}
	channel := b.Prefix() + ":{" + id + "}:live"
	shardSubs := func(addr string) int64 {
		n, err := redisproc.Do(addr, "PUBSUB", "SHARDNUMSUB", channel)
		require.NoError(t, err)
		return n.([]any)[1].(int64)
	}
	assert.Equal(t, int64(1), shardSubs(newMaster.Addr), "the channel is subscribed on the master that serves its slot")
	eventually(t, func() bool { return shardSubs(old.Addr) == 0 }, "the channel is not left subscribed on the old master")

	_, err = b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Done"})
	require.NoError(t, err)
	events, err := drain(ch)
	require.NoError(t, err)
	require.Len(t, events, 1)
	assert.Equal(t, progress.StateSuccess, events[0].State)
}

// errorStats sums the error replies of the cluster's nodes by their first
// word (MOVED, ASK, TRYAGAIN...), from INFO errorstats.
func errorStats(t *testing.T, c *redistest.Cluster) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range c.Nodes {
		info, err := redisproc.DoString(n.Addr(), "INFO", "errorstats")
		require.NoError(t, err)
		for line := range strings.Lines(info) {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":count=")
			if !ok {
				continue
			}
			k, _ := strconv.Atoi(rest)
			out[strings.TrimPrefix(name, "errorstat_")] += k
		}
	}
	return out
}

// clusterRun is a web process and a worker process on one cluster: tasks
// started through the broker are run by the worker, and each is watched
// live by the web backend from its start to its end.
type clusterRun struct {
	web    *redisbackend.Backend
	broker *queue.Broker
	// hold, when set, is waited for by every run before its last step.
	hold chan struct{}

	mu       sync.Mutex
	runs     map[string]int
	started  []string
	watchers sync.WaitGroup
	seen     map[string][]string
	errs     []error
}

// runOnCluster starts a worker on c with a flow that reports four steps,
// stopped when the test ends.
func runOnCluster(t *testing.T, c *redistest.Cluster, hold chan struct{}) *clusterRun {
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	r := &clusterRun{web: newBackend(t, newClusterClient(t, c), cfg), hold: hold, runs: map[string]int{}, seen: map[string][]string{}}
	reg := registry.New()
	r.broker = queue.NewBroker(r.web, r.web, queue.BrokerConfig{Registry: reg})
	workerSide := newBackend(t, newClusterClient(t, c), cfg)
	reg.MustRegister("steps", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		r.mu.Lock()
		r.runs[ft.ID]++
		r.mu.Unlock()
		for i := range 4 {
			if i == 3 && r.hold != nil {
				select {
				case <-r.hold:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			ft.Progress.Log(fmt.Sprintf("step %d", i))
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return ft.ID, nil
	}))
	startWorker(t, queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
		Registry: reg, Concurrency: 8, Lease: 5 * time.Second, Logger: quiet,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond },
	}))
	return r
}

// start enqueues a task and watches it live.
func (r *clusterRun) start(ctx context.Context, t *testing.T) string {
	t.Helper()
	id, err := r.broker.Enqueue(ctx, "steps", nil, queue.EnqueueOptions{MaxAttempts: 3})
	require.NoError(t, err)
	ch, err := r.web.Subscribe(ctx, id, "")
	require.NoError(t, err)
	r.mu.Lock()
	r.started = append(r.started, id)
	r.mu.Unlock()
	r.watchers.Go(func() {
		events, err := drain(ch)
		if err != nil {
			err = fmt.Errorf("task %s: %w; %s", id, err, r.whereIs(id, events))
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seen[id] = ids(events)
		if err != nil {
			r.errs = append(r.errs, err)
		}
	})
	return id
}

// whereIs says where a task whose watcher did not end stands in Redis,
// so that a failure tells a live message the hub missed (the task ended
// and its log holds more than the watcher got) from a task that is still
// running or waiting for another attempt.
func (r *clusterRun) whereIs(id string, got []progress.Event) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, _, err := r.web.Snapshot(ctx, id)
	if err != nil {
		return fmt.Sprintf("its snapshot cannot be read: %v", err)
	}
	logged, err := r.web.Events(ctx, id, "")
	if err != nil {
		return fmt.Sprintf("state %s, its log cannot be read: %v", snap.State, err)
	}
	last := "none"
	if len(got) > 0 {
		last = got[len(got)-1].ID
	}
	r.mu.Lock()
	runs := r.runs[id]
	r.mu.Unlock()
	return fmt.Sprintf("state %s after %d runs, %d events in its log, the watcher's last %s", snap.State, runs, len(logged), last)
}

// check waits for the watchers, then checks that every task succeeded and
// that its watcher saw every event once, in order. It returns how many
// tasks ran more than once.
func (r *clusterRun) check(ctx context.Context, t *testing.T) (twice int) {
	t.Helper()
	r.watchers.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Empty(t, r.errs)
	for _, id := range r.started {
		snap, _, err := r.web.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State, "task %s: %q", id, snap.Details.Status)
		events, err := r.web.Events(ctx, id, "")
		require.NoError(t, err)
		assert.Equal(t, ids(events), r.seen[id], "task %s: every event once, in order, live", id)
		assert.Positive(t, r.runs[id], "task %s ran", id)
		if r.runs[id] > 1 {
			twice++
		}
	}
	return twice
}

// listensForCancellations waits until a connection is subscribed to the
// queue's cancellation channel on the master that serves it.
func listensForCancellations(t *testing.T, c *redistest.Cluster, prefix string) {
	t.Helper()
	channel := prefix + ":{q:default}:cancel"
	eventually(t, func() bool {
		owner := slotOwner(t, c, channel)
		n, err := redisproc.Do(owner.Addr, "PUBSUB", "SHARDNUMSUB", channel)
		return err == nil && n.([]any)[1].(int64) >= 1
	}, "the worker listens for cancellations on the queue's master")
}

// otherMasters returns the masters but m.
func otherMasters(t *testing.T, c *redistest.Cluster, m redisproc.ClusterNode) []redisproc.ClusterNode {
	t.Helper()
	masters, err := c.Masters()
	require.NoError(t, err)
	var others []redisproc.ClusterNode
	for _, n := range masters {
		if n.ID != m.ID {
			others = append(others, n)
		}
	}
	return others
}

// TestClusterReshardingLosesNothing moves every slot of the master that
// serves the queue to the other masters with redis-cli --cluster reshard,
// keys and all, while a worker runs tasks and every task is watched live:
// no task, no event is lost or delivered twice.
func TestClusterReshardingLosesNothing(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	r := runOnCluster(t, c, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()
	queueMaster := slotOwner(t, c, r.web.Prefix()+":{q:default}:stream")
	others := otherMasters(t, c, queueMaster)
	before := errorStats(t, c)

	resharded := make(chan error, 1)
	go func() {
		half := queueMaster.Slots / 2
		err := c.Reshard(queueMaster.ID, others[0].ID, half)
		if err == nil {
			err = c.Reshard(queueMaster.ID, others[1].ID, queueMaster.Slots-half)
		}
		resharded <- err
	}()
	for moving := true; moving; {
		select {
		case err := <-resharded:
			require.NoError(t, err)
			moving = false
		default:
		}
		r.start(ctx, t)
		time.Sleep(10 * time.Millisecond)
	}
	masters, err := c.Masters()
	require.NoError(t, err)
	for _, m := range masters {
		assert.NotEqual(t, queueMaster.ID, m.ID, "the queue's first master serves no slot any more")
	}
	twice := r.check(ctx, t)
	// The cancellation channel moved with the queue's slot.
	listensForCancellations(t, c, r.web.Prefix())

	stats := errorStats(t, c)
	assert.Positive(t, stats["MOVED"]-before["MOVED"], "the clients were redirected")
	t.Logf("%d tasks during the resharding, %d ran more than once; replies: %d MOVED, %d ASK, %d TRYAGAIN",
		len(r.started), twice, stats["MOVED"]-before["MOVED"], stats["ASK"]-before["ASK"], stats["TRYAGAIN"]-before["TRYAGAIN"])
}

// TestClusterSlotsHalfMigrated holds the queue's slot, then a running
// task's, half way through their move to another master for a while:
// scripts on their keys get TRYAGAIN (and commands on moved keys ASK,
// depending on which keys moved first), and once the move ends every task has run and every event reached its
// watcher once.
func TestClusterSlotsHalfMigrated(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	hold := make(chan struct{})
	r := runOnCluster(t, c, hold)
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()
	before := errorStats(t, c)

	// Tasks that wait before their last step, so that their keys exist
	// and are in use while the slots move.
	for range 20 {
		r.start(ctx, t)
	}
	eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.runs) == 8 // the worker's slots are taken
	}, "the worker took tasks")

	pause := func() {
		// While the slot is half moved: more tasks, and time for the
		// commands refused meanwhile to be tried again.
		for range 5 {
			r.start(ctx, t)
		}
		time.Sleep(500 * time.Millisecond)
	}
	queueKey := r.web.Prefix() + ":{q:default}:stream"
	queueSlot, err := c.SlotOf(queueKey)
	require.NoError(t, err)
	to := otherMasters(t, c, slotOwner(t, c, queueKey))[0]
	require.NoError(t, c.MoveSlot(queueSlot, to.ID, pause))

	// A running task whose slot holds its three keys (record, steps,
	// events) and no other: half way through the move one of them has
	// moved, and its next append, a script on all three, is refused
	// with TRYAGAIN until the move ends.
	r.mu.Lock()
	var held []string
	for id := range r.runs {
		held = append(held, id)
	}
	r.mu.Unlock()
	running, taskSlot := "", 0
	for _, id := range held {
		slot, err := c.SlotOf(id)
		require.NoError(t, err)
		n, err := redisproc.Do(slotOwner(t, c, id).Addr, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot))
		require.NoError(t, err)
		if n == int64(3) {
			running, taskSlot = id, slot
			break
		}
	}
	require.NotEmpty(t, running, "no running task has a slot of its own keys alone")
	to = otherMasters(t, c, slotOwner(t, c, running))[0]
	require.NoError(t, c.MoveSlot(taskSlot, to.ID, func() {
		close(hold) // the running tasks report their last steps and end
		// The task's last steps come when its flow gets to them, which
		// on a loaded machine may be after a pause of any length:
		// wait for their refusal.
		eventually(t, func() bool { return errorStats(t, c)["TRYAGAIN"] > before["TRYAGAIN"] },
			"no script on the half-moved slot of task "+running+" was refused with TRYAGAIN")
		pause()
	}))

	twice := r.check(ctx, t)
	listensForCancellations(t, c, r.web.Prefix())
	stats := errorStats(t, c)
	assert.Positive(t, stats["TRYAGAIN"]-before["TRYAGAIN"], "scripts were refused while their slot moved, and tried again")
	t.Logf("%d tasks, %d ran more than once; replies: %d MOVED, %d ASK, %d TRYAGAIN",
		len(r.started), twice, stats["MOVED"]-before["MOVED"], stats["ASK"]-before["ASK"], stats["TRYAGAIN"]-before["TRYAGAIN"])
}

// TestClusterLongMoveSpendsNoAttempt holds a pending task's slot half way
// through its move for longer than the worker's OpTimeout: every script
// on the task's keys gets TRYAGAIN until the move ends. The worker's
// reporter sends the refused start and end again for 10 s each (a
// refusal past OpTimeout is not run), so the worker cannot record the
// task and hands it back, again and again, more times than the task has
// attempts (one). Those hand-backs are the cluster's doing, not the
// flow's: once the move ends, the task runs and ends SUCCESS. The lease
// is the default's, longer than those resends: a shorter one would pass
// first, and the task would be taken again as an expired lease, which
// counts as an attempt.
func TestClusterLongMoveSpendsNoAttempt(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	cfg := redisbackend.Config{Prefix: uniquePrefix(t)}
	web := newBackend(t, newClusterClient(t, c), cfg)
	reg := registry.New()
	reg.MustRegister("steps", flow.Func(func(ctx context.Context, ft *flow.Task) (any, error) {
		ft.Progress.Log(fmt.Sprintf("step of attempt %d", ft.Attempt))
		return "done", nil
	}))
	broker := queue.NewBroker(web, web, queue.BrokerConfig{Registry: reg})
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()

	// A task alone in its slot, which is not the queue's.
	queueSlot, err := c.SlotOf(web.Prefix() + ":{q:default}:stream")
	require.NoError(t, err)
	used := map[int]bool{queueSlot: true}
	id, slot := "", 0
	for id == "" {
		cand, err := broker.Enqueue(ctx, "steps", nil, queue.EnqueueOptions{MaxAttempts: 1})
		require.NoError(t, err)
		s, err := c.SlotOf(cand)
		require.NoError(t, err)
		if !used[s] {
			id, slot = cand, s
		}
		used[s] = true
	}

	workerSide := newBackend(t, newClusterClient(t, c), redisbackend.Config{Prefix: cfg.Prefix, OpTimeout: time.Second})
	to := otherMasters(t, c, slotOwner(t, c, id))[0]
	before := errorStats(t, c)
	require.NoError(t, c.MoveSlot(slot, to.ID, func() {
		startWorker(t, queue.NewWorker(workerSide, workerSide, queue.WorkerConfig{
			Registry: reg, Lease: queue.DefaultLease, Logger: quiet,
			Backoff: func(int) time.Duration { return 50 * time.Millisecond },
		}))
		// Hold the move until the task has been handed back more times
		// than it has attempts: some 20 s each (the start's resends,
		// then the end's).
		eventuallyWithin(t, 4*waitLimit, func() bool {
			got, err := web.Get(ctx, id)
			require.NoError(t, err)
			return got.HandBacks >= 2
		}, "the worker did not hand task "+id+" back twice while its slot moved")
	}))

	var snap progress.Snapshot
	eventually(t, func() bool {
		snap, _, err = web.Snapshot(ctx, id)
		require.NoError(t, err)
		return snap.State.Terminal()
	}, "task "+id+" did not end")
	require.Equal(t, progress.StateSuccess, snap.State, "status %q: the hand-backs spent the task's attempts", snap.Details.Status)
	got, err := web.Get(ctx, id)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, got.HandBacks, 2)
	assert.Equal(t, got.HandBacks+1, got.Attempt, "every lease but the last was handed back")
	steps := snap.Details.StepResults
	require.Len(t, steps, 2, "the opening step of the last attempt, and its step")
	assert.Equal(t, fmt.Sprintf("attempt %d of %d starts: attempt %d could not record its progress (not counted; %d hand-backs so far)",
		got.Attempt, got.Attempt, got.Attempt-1, got.HandBacks), steps[0].Message)
	stats := errorStats(t, c)
	t.Logf("%d hand-backs while the slot moved; replies: %d ASK, %d TRYAGAIN",
		got.HandBacks, stats["ASK"]-before["ASK"], stats["TRYAGAIN"]-before["TRYAGAIN"])
	assert.Positive(t, stats["TRYAGAIN"]-before["TRYAGAIN"], "scripts on the task's keys were refused while its slot moved")
}

// TestClusterLiveStreamsOverRESP2 watches tasks and listens for
// cancellations through a Cluster client that speaks RESP2 (protocol=2 in
// a REDIS_URL that rueidis.ParseURL reads): rueidis then takes no other
// command in the round trip of an SSUBSCRIBE, so the ROLE that checks the
// node must go in one of its own, or no channel is ever subscribed and
// events reach the watchers only at their PollInterval (an hour here).
func TestClusterLiveStreamsOverRESP2(t *testing.T) {
	t.Parallel()
	const tasks, perTask, live = 6, 2, 3
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	opt := c.ClientOption()
	opt.AlwaysRESP2 = true
	b := newBackend(t, testClient(t, opt), redisbackend.Config{PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	cancels, err := b.Cancellations(ctx)
	require.NoError(t, err)
	taskIDs := make([]string, tasks)
	for i := range taskIDs {
		taskIDs[i] = newTask().ID
		require.NoError(t, b.Create(ctx, taskIDs[i]))
		_, err := b.Append(ctx, taskIDs[i], progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
	}
	results := subscribeEach(ctx, t, b, taskIDs, perTask)
	finishEach(ctx, t, b, taskIDs, live, results)

	require.NoError(t, b.Cancel(ctx, taskIDs[0]))
	select {
	case id := <-cancels:
		assert.Equal(t, taskIDs[0], id)
	case <-ctx.Done():
		require.FailNow(t, "no cancellation")
	}
}

// TestClusterMasterFailoverLosesNothing kills the master that serves the
// queue (SIGKILL) while tasks wait in their runs and every task is
// watched live; its replica takes over. Once the cluster agrees on the
// new master, the tasks finish and more are started: every task ends
// SUCCESS, and every watcher got every event once, in order, though its
// channel's master died (on the queue's master: the cancellation channel,
// and the live channels of the tasks whose slots it served).
//
// Replication is asynchronous, and a failover loses what the replica had
// not got (README, "What a failover loses"): a replica whose link is up
// may not have been sent a byte yet (seen here a second after its full
// sync: a master streams to a replica from its first REPLCONF ACK on).
// So the master dies only once every run is held with its reports
// recorded and its replica has all it took (WAIT): then only heartbeats
// and lease extensions may be written as it dies, whose loss costs
// nothing here.
func TestClusterMasterFailoverLosesNothing(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Replicas: 1})
	hold := make(chan struct{})
	r := runOnCluster(t, c, hold)
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()
	queueMaster := slotOwner(t, c, r.web.Prefix()+":{q:default}:stream")
	listensForCancellations(t, c, r.web.Prefix())

	var held []string
	for range 8 { // the worker's concurrency
		held = append(held, r.start(ctx, t))
	}
	eventually(t, func() bool {
		for _, id := range held {
			events, err := r.web.Events(ctx, id, "")
			if err != nil || !logged(events, "step 2") {
				return false
			}
		}
		return true
	}, "every task is running, held before its last step, its reports recorded")
	replicated(ctx, t, newClusterClient(t, c), r.web.Prefix()+":{q:default}:replicated")
	c.Node(queueMaster.Addr).Kill()
	slot, err := c.SlotOf(r.web.Prefix() + ":{q:default}:stream")
	require.NoError(t, err)
	eventually(t, func() bool {
		owner, err := c.Owner(slot) // none while the master is failing
		return err == nil && owner.ID != queueMaster.ID
	}, "the replica of the queue's master takes over")
	require.NoError(t, c.WaitOK())

	close(hold)
	// A start may fail (503) until the client has the new slot map.
	eventually(t, func() bool {
		_, err := r.broker.Enqueue(ctx, "steps", nil, queue.EnqueueOptions{})
		return err == nil
	}, "starts are taken again")
	for range 12 {
		r.start(ctx, t)
	}
	twice := r.check(ctx, t)
	listensForCancellations(t, c, r.web.Prefix())
	t.Logf("%d tasks, %d ran more than once", len(r.started), twice)
}

// TestClusterResubscribesManySlotsOverRESP2: a link on a Cluster client
// that speaks RESP2, subscribing again at once the channels of more slots
// than one round trip carries (its connection cut, with over a thousand
// tasks watched on one master), sends its SSUBSCRIBEs in several round
// trips, only the last of them with the ROLE that rueidis refuses there.
// The fallback that sends ROLE on its own must send again only what was
// refused, not the SSUBSCRIBEs of the round trips that went through,
// whose commands rueidis has recycled by then: every watcher still gets
// every event of its task.
func TestClusterResubscribesManySlotsOverRESP2(t *testing.T) {
	t.Parallel()
	const tasks = 1300 // over a thousand slots of the one master
	c := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 1})
	opt := c.ClientOption()
	opt.AlwaysRESP2 = true
	b := newBackend(t, testClient(t, opt), redisbackend.Config{PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	taskIDs := make([]string, tasks)
	for i := range taskIDs {
		taskIDs[i] = newTask().ID
		require.NoError(t, b.Create(ctx, taskIDs[i]))
		_, err := b.Append(ctx, taskIDs[i], progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
	}
	results := subscribeEach(ctx, t, b, taskIDs, 1)

	_, err := redisproc.Do(c.Nodes[0].Addr(), "CLIENT", "KILL", "TYPE", "pubsub") // an integer: how many
	require.NoError(t, err)
	finishEach(ctx, t, b, taskIDs, 2, results)
}

// logged reports whether events hold a log step of message msg.
func logged(events []progress.Event, msg string) bool {
	for _, e := range events {
		if e.Type == progress.EventStep && e.Step != nil && e.Step.Type == progress.StepLog && e.Step.Message == msg {
			return true
		}
	}
	return false
}

// replicated waits until the replica of the master that serves key has
// every write that master took so far: a write of key, then WAIT on the
// same connection, which counts the replicas that acknowledged that
// connection's writes, and so every write the master took before them.
func replicated(ctx context.Context, t *testing.T, client rueidis.Client, key string) {
	t.Helper()
	err := client.Dedicated(func(c rueidis.DedicatedClient) error {
		if err := c.Do(ctx, c.B().Set().Key(key).Value("1").Build()).Error(); err != nil {
			return err
		}
		n, err := c.Do(ctx, c.B().Wait().Numreplicas(1).Timeout(waitLimit.Milliseconds()).Build()).AsInt64()
		if err == nil && n < 1 {
			err = fmt.Errorf("WAIT: %d replicas acknowledged the writes", n)
		}
		return err
	})
	require.NoError(t, err, "the replica has every write of the master")
}
