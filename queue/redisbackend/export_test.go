package redisbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// SetInboxLimit changes the bound of subscription buffers until the
// returned function restores it.
func SetInboxLimit(n int) (restore func()) {
	old := inboxLimit
	inboxLimit = n
	return func() { inboxLimit = old }
}

// SetDeadChannels changes, for b's pub/sub connections, how many
// channels whose watchers left one holds subscribed (beyond those
// watched) and for how long before it is replaced by one without them.
// It must be called before b's first subscription.
func SetDeadChannels(b *Backend, limit int, age time.Duration) {
	b.hub.deadLimit, b.hub.deadAge = limit, age
}

// SetHubHooks has b's pub/sub hub call overlap during each replacement
// of a connection, while the old one and the new one are both
// subscribed, and resync (holding the hub's lock) for each channel whose
// listeners are told to resynchronise. It must be called before b's
// first subscription.
func SetHubHooks(b *Backend, overlap func(), resync func(channel string)) {
	b.hub.onOverlap, b.hub.onResync = overlap, resync
}

// SetReplaceHook has b's pub/sub hub call begin as each replacement of a
// connection begins, before the new connection is dialled: the old one
// alone is subscribed. It must be called before b's first subscription.
func SetReplaceHook(b *Backend, begin func()) {
	b.hub.onReplace = begin
}

// SetCutStart makes every start of b taken in steps (on a Cluster
// client, of a limited flow, and every re-queue) call cut between the
// task's record and its queue entry, and stop there if cut returns an
// error; nil restores them.
func SetCutStart(b *Backend, cut func(id string) error) { b.cutStart = cut }

// CutStatus is the status line of a task whose start was cut.
const CutStatus = cutStatus

// SetCutAfter makes b take a start as cut (see starts.go) once it has
// stayed in the starting set for d, instead of a minute or more.
func SetCutAfter(b *Backend, d time.Duration) {
	b.cutAfterSet, b.cutAfterTest = true, d
}

// HeartbeatSHA is the SHA-1 of the heartbeat script, by which a round
// trip that carries a worker's heartbeat can be told apart.
var HeartbeatSHA = heartbeatScript.sha

// ReclaimLimit is the most entries a heartbeat takes back from one dead
// worker, and a sweep's page of the pending list.
const ReclaimLimit = reclaimLimit

// SetSweepEvery changes how often b's heartbeats look for cut starts
// and for entries pending with no lease.
func SetSweepEvery(b *Backend, d time.Duration) { b.sweep.every = d }

// EndCutStarts looks for cut starts at once, as a heartbeat does when it
// is due, ends their tasks, and returns how many it ended.
func (b *Backend) EndCutStarts(ctx context.Context) (int, error) {
	res := b.client.DoMulti(ctx, b.sweepCommands(time.Now())...)
	return b.endCutStarts(ctx, res[len(res)-1])
}

// SetRetireIdle changes how long an empty consumer must be idle for Retire
// to delete it, until the returned function restores it.
func SetRetireIdle(d time.Duration) (restore func()) {
	old := retireIdle
	retireIdle = d
	return func() { retireIdle = old }
}

// SetFetchSleep replaces how a Fetch sleeps while tasks gather (see
// Config.FetchDelay) until the returned function restores it.
func SetFetchSleep(sleep func(ctx context.Context, d time.Duration) bool) (restore func()) {
	old := fetchSleep
	fetchSleep = sleep
	return func() { fetchSleep = old }
}

// SetFetchNow replaces the clock by which a Fetch measures how fast its
// worker takes tasks (see Config.FetchDelay) until the returned function
// restores it.
func SetFetchNow(now func() time.Time) (restore func()) {
	old := fetchNow
	fetchNow = now
	return func() { fetchNow = old }
}

// SetLingerTimer replaces how a batched call times its linger (see
// Config.EnqueueDelay, Config.AckDelay) until the returned function restores it.
func SetLingerTimer(timer func(d time.Duration) (<-chan time.Time, func() bool)) (restore func()) {
	old := lingerTimer
	lingerTimer = timer
	return func() { lingerTimer = old }
}

// Waiting returns how many calls of each batched operation wait for the
// batch in flight to end.
func (b *Backend) Waiting() (appends, acks, creates int) {
	return b.appends.waitingCalls(), b.acks.waitingCalls(), b.creates.waitingCalls()
}

// WaitingFinishes returns how many AppendAndAck calls wait for their
// batch (lingering ones included).
func (b *Backend) WaitingFinishes() int { return b.finishes.waitingCalls() }

// WaitingSnapshots returns how many Snapshot calls wait for the batch in
// flight to end.
func (b *Backend) WaitingSnapshots() int { return b.snapshots.waitingCalls() }

// WaitingCheckpoints returns how many SaveCheckpoint calls wait for the
// batch in flight to end.
func (b *Backend) WaitingCheckpoints() int { return b.checkpoints.waitingCalls() }

// MaxFetch is the most tasks one Fetch leases.
const MaxFetch = maxBatch

// BulkLoad writes n finished and unfinished tasks straight into Redis, as
// the backend would have recorded them, with their index entries, in
// pipelines of a few thousand commands: fast enough to fill Redis with a
// million tasks for a benchmark, which running them through a worker is
// not. Task i has the id of i in 32 hex digits and the flow flows[i %
// len(flows)]; 90% of the tasks succeeded, 5% failed, 3% run and 2% wait.
// They were enqueued spacing apart, from start on (all in one millisecond
// for a spacing of zero); each started 10 ms after it was enqueued and
// ended 20 ms after. Every third task (i % 3 == 0) has the owner
// "user:ada", the others none. The hashes do not expire.
func BulkLoad(ctx context.Context, b *Backend, n int, flows []string, start time.Time, spacing time.Duration) error {
	c := b.client
	const chunk = 2000
	for from := 0; from < n; from += chunk {
		to := min(from+chunk, n)
		cmds := make(rueidis.Commands, 0, to-from+2+len(flows))
		all := c.B().Zadd().Key(b.indexKey()).ScoreMember()
		byFlow := map[string]*[]indexEntry{}
		for i := from; i < to; i++ {
			id := fmt.Sprintf("%032x", i)
			flow := flows[i%len(flows)]
			enq := start.Add(time.Duration(i) * spacing)
			started, ended := enq.Add(10*time.Millisecond), enq.Add(20*time.Millisecond)
			t := &queue.Task{ID: id, Flow: flow, Inputs: json.RawMessage(`{"topic":"the sea"}`), Attempt: 1,
				MaxAttempts: 3, Timeout: time.Minute, EnqueuedAt: enq}
			if i%3 == 0 {
				t.Owner = "user:ada"
			}
			state, status, pct, at := progress.StateSuccess, "Completed", "100", ended
			switch p := i % 100; {
			case p >= 98:
				state, status, pct, at, t.Attempt = progress.StatePending, "Queued", "0", enq, 0
			case p >= 95:
				state, status, pct, at = progress.StateProgress, "Writing", "40", started
			case p >= 90:
				state, status, pct, at = progress.StateFailure, "the model refused", "40", ended
			}
			ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
			hset := c.B().Hset().Key(b.taskKey(id)).FieldValue().
				FieldValue(recRec, encodeRec(t)).FieldValue(recAttempt, strconv.Itoa(t.Attempt)).
				FieldValue(fieldState, string(state)).FieldValue(fieldStatus, status).FieldValue(fieldProgress, pct).
				FieldValue(fieldLast, "").FieldValue(fieldUpdated, ms(at))
			if state != progress.StatePending {
				hset = hset.FieldValue(fieldStarted, ms(started))
			}
			if state.Terminal() {
				hset = hset.FieldValue(fieldEnded, ms(ended))
			}
			cmds = append(cmds, hset.Build())
			e := indexEntry{id: id, flow: flow, rank: stateRanks[state], ms: at.UnixMilli()}
			all = all.ScoreMember(indexScore(e.rank, e.ms), id)
			list := byFlow[flow]
			if list == nil {
				list = new([]indexEntry)
				byFlow[flow] = list
			}
			*list = append(*list, e)
		}
		cmds = append(cmds, all.Build())
		for flow, list := range byFlow {
			z := c.B().Zadd().Key(b.flowIndexKey(flow)).ScoreMember()
			for _, e := range *list {
				z = z.ScoreMember(indexScore(e.rank, e.ms), e.id)
			}
			cmds = append(cmds, z.Build())
		}
		cmds = append(cmds, c.B().Sadd().Key(b.flowsKey()).Member(flows...).Build())
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteTask deletes task id's hash as the backend does when it takes a
// record back (see deleteTask).
func DeleteTask(ctx context.Context, b *Backend, id string) error {
	return b.send(ctx, "delete task "+id, b.deleteTask(id))
}

// ReadBudget is the most bytes of a task's events list one read of it
// takes in (see readBudget), less one element.
const ReadBudget = readBudget
