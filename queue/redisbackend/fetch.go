package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/opctx"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Fetch tuning.
const (
	// maxBlock bounds one wait of Fetch, so that it looks at the queue at
	// least this often whatever it expects.
	maxBlock = time.Second
	// promoteBatch bounds the delayed tasks one Fetch moves to the stream.
	promoteBatch = 100
	// defaultLease replaces a lease of zero or less.
	defaultLease = 30 * time.Second
)

// Fetch implements queue.Backend. One script moves due delayed tasks into
// the stream, takes over entries whose lease has passed and reads new ones
// (see lua/fetch.lua), increments the attempt of each task taken and reads
// its record: one round trip (two on a Cluster client, see lease). It
// leases at most maxBatch tasks per call, whatever max asks, so that one
// script does not hold Redis for long; a worker with more free slots
// fetches again at once.
//
// When the script has taken every task that was ready, it also tells how
// to wait for the next: until an entry is added to the stream, the next
// delayed task is due (to the millisecond, by the Redis server's clock),
// the next lease passes, or a second goes by (maxBlock). The backend keeps
// that plan for the worker's next Fetch, which sends a blocking XREAD
// and the script together: Redis runs the script as soon as the XREAD
// returns, so that a worker waiting for work takes each task in one round
// trip and one script (on a Cluster client, the script follows in a
// round trip of its own, see waitAndTake). A Fetch with no plan, or whose plan says to look at
// once, runs the script alone, and waits (with the XREAD and the script)
// only if it found nothing. A plan is never trusted for longer than it
// may be stale: a task delayed to less than maxBlock from now (a close
// RunAt, a short retry backoff) adds an entry to the queue's wake stream,
// which the same XREAD watches, and one delayed for longer is not due
// before the plan's second has passed.
//
// The XREAD changes nothing, and a Fetch whose ctx is cancelled while it
// waits ends the wait by adding an entry to the wake stream (which makes
// the other waiting fetchers look too, harmlessly), then waits for the
// script's answer: so no task is ever leased by a Fetch that has stopped
// listening. If that look took tasks, Fetch returns them although ctx has
// ended; the caller runs them or hands them back. A wait cut short by
// ctx's deadline likewise ends with a look whose answer is awaited.
//
// With Config.FetchDelay set, a Fetch whose plan says to wait, of a
// worker that has been taking tasks fast enough for the delay to pay (see
// fetchPace), first sleeps until FetchDelay has passed since the worker
// last took tasks, or until the plan's time if sooner, and half the time
// ctx has left at most, holding nothing, and then waits and takes as
// above: tasks enqueued meanwhile are taken at once, together. A sleep
// that ends after ctx's deadline (late, on a loaded machine) is followed
// by that look all the same, without a wait, so that a Fetch with a
// short deadline returns the tasks that are ready; a sleep cut by ctx's
// cancellation ends the Fetch with nothing leased.
func (b *Backend) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	leases, _, err := b.FetchWithState(ctx, worker, max, lease)
	return leases, err
}

// FetchWithState is Fetch that also returns, for each lease, the task's
// progress state as the same round trip read it ("" for a task with no
// progress record). A queue.Worker whose store is this Backend (see
// queue.NewWorker) fetches through it: a task found PENDING or PROGRESS
// runs at once, its start recorded with the flow's first events, and one
// found ended is not run again.
func (b *Backend) FetchWithState(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, []progress.State, error) {
	if max <= 0 {
		max = 1
	}
	max = min(max, maxBatch)
	if lease <= 0 {
		lease = defaultLease
	}
	delayed := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		plan, wait := b.planOf(ctx, worker)
		if wait > 0 && !delayed {
			// Let tasks gather (Config.FetchDelay), once per call, until
			// FetchDelay has passed since the worker last took tasks: a
			// sleep here holds no lease. It leaves half the time ctx has
			// left at least, for the look that follows.
			delayed = true
			sleep := min(plan.pace.cooldown(b.cfg.FetchDelay, fetchNow()), wait)
			if dl, ok := ctx.Deadline(); ok {
				sleep = min(sleep, time.Until(dl)/2)
			}
			if sleep > 0 {
				if !fetchSleep(ctx, sleep) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return nil, nil, ctx.Err()
				}
				// The look is owed even if ctx's deadline has passed,
				// as it may when the sleep ends late (a loaded
				// machine): then it looks without waiting.
				plan, wait = b.planOf(ctx, worker)
			}
		}
		pace := plan.pace
		var taken []takenEntry
		var err error
		if wait > 0 {
			taken, plan, err = b.waitAndTake(ctx, worker, max, lease, plan, wait)
		} else {
			taken, plan, err = b.take(ctx, worker, max, lease, plan)
		}
		plan.pace = pace.after(len(taken), fetchNow())
		b.plans.set(worker, plan)
		if err != nil {
			return nil, nil, err
		}
		if len(taken) > 0 {
			leases, states, err := b.lease(ctx, taken, lease)
			if len(leases) > 0 || err != nil {
				return leases, states, err
			}
		}
	}
}

// planOf returns worker's plan and how long a look may wait for work
// by it: until the plan's time, and ctx's deadline at the latest.
func (b *Backend) planOf(ctx context.Context, worker string) (waitPlan, time.Duration) {
	plan := b.plans.get(worker)
	wait := time.Until(plan.until)
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	return plan, wait
}

// fetchSleep is how a Fetch lets tasks gather, and fetchNow its clock
// for a worker's pace; tests replace them.
var (
	fetchSleep = opctx.Sleep
	fetchNow   = time.Now
)

// Pace of a worker's takes (see fetchPace).
const (
	// paceWindow is the time constant of the rate a worker takes tasks
	// at: what it took a window ago weighs 1/e of what it takes now.
	paceWindow = time.Second
	// paceGather is how many tasks a worker must expect to take per
	// Config.FetchDelay for the delay to be let pass: below it, too few
	// tasks would share a look to be worth their wait.
	paceGather = 4
)

// fetchPace is how fast a worker has been taking tasks lately: the
// number it took, each weighed down by e for every paceWindow since it
// was taken, per paceWindow; a steady rate of r tasks a second reads as r
// after a few windows, and a worker that takes nothing for a few windows
// reads as idle.
type fetchPace struct {
	at   time.Time // of the last look
	rate float64   // tasks a second, as of at
	// took is when the worker last took tasks.
	took time.Time
}

// after returns the pace after a look that took n tasks (none counts
// too: time passed) at now.
func (p fetchPace) after(n int, now time.Time) fetchPace {
	next := fetchPace{at: now, rate: p.rateAt(now) + float64(n)/paceWindow.Seconds(), took: p.took}
	if n > 0 {
		next.took = now
	}
	return next
}

// rateAt returns the rate as of now: decayed since the last look.
func (p fetchPace) rateAt(now time.Time) float64 {
	if p.at.IsZero() {
		return 0
	}
	return p.rate * math.Exp(-now.Sub(p.at).Seconds()/paceWindow.Seconds())
}

// cooldown returns how long a Fetch lets tasks gather before it waits
// (see Config.FetchDelay): what is left of delay since the worker last
// took tasks, when it expects paceGather tasks or more within delay at
// its pace; zero otherwise.
func (p fetchPace) cooldown(delay time.Duration, now time.Time) time.Duration {
	if delay <= 0 || p.rateAt(now)*delay.Seconds() < paceGather {
		return 0
	}
	return max(p.took.Add(delay).Sub(now), 0)
}

// A waitPlan is what a look at the queue tells the next look of the same
// worker: until when it may wait for new entries, and after which ones.
type waitPlan struct {
	// until is when to look again at the latest: when the next delayed
	// task is due, the next lease passes or maxBlock has passed since the
	// look, whichever is first; zero (the past) when more tasks may be
	// ready, and the next look must not wait.
	until time.Time
	// lastID and wakeID are the ids after which the wait watches the
	// stream and the wake stream; wakeID is kept from look to look, ""
	// until the first look that tells it.
	lastID, wakeID string
	// pace is how fast the worker has been taking tasks, which decides
	// whether Config.FetchDelay is let pass before the next wait.
	pace fetchPace
	// quickUntil is the time (Unix ms, the Redis server's clock, as a
	// string) until which the last full look found no delayed task due
	// and no lease passing, "" when the next look must be full (see
	// quickLook).
	quickUntil string
}

// fetchPlans keeps each worker's waitPlan.
type fetchPlans struct {
	mu sync.Mutex
	m  map[string]waitPlan
}

// maxPlans bounds the plans kept: past it, they are all forgotten, which
// only costs each worker a look without a wait.
const maxPlans = 1024

func (p *fetchPlans) get(worker string) waitPlan {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[worker]
}

func (p *fetchPlans) set(worker string, plan waitPlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[worker]; !ok && len(p.m) >= maxPlans || p.m == nil {
		p.m = make(map[string]waitPlan)
	}
	p.m[worker] = plan
}

func (p *fetchPlans) forget(worker string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, worker)
}

// takenEntry is an entry the fetch script leased.
type takenEntry struct {
	entry, taskID, token string
	// ended is why the attempt before ended when the script took the
	// entry over (a queue.AttemptEnd), "" when it read the entry anew.
	ended string
	// read is set when the script read the task's record, into rec.
	read bool
	rec  record
}

// The fetch script finds a record's rec, attempt, prev and counted at
// these places of recordFieldNames (Lua counts from 1).
const _ = uint(iRec-0) + uint(0-iRec) + uint(iAttempt-1) + uint(1-iAttempt) + uint(iPrev-4) + uint(4-iPrev) + uint(iCounted-9) + uint(9-iCounted)

// A look that ends a wait may be quick: the fetch script then reads new
// entries only, and leaves the delayed set and the leases alone (two
// commands fewer), while the server's clock is before the plan's
// quickUntil, which the last full look set to when the next delayed task
// is due or the next lease passes, a second (maxBlock) at most, by more
// than a quarter of maxBlock. A look in that last quarter is full and
// sets quickUntil anew: a worker whose waits are ended by tasks at least
// every quarter of a second (as at 200 tasks/s, also with
// Config.EnqueueDelay 200 ms) makes its full looks in those looks,
// and no wait of its ends on quickUntil alone, which would cost Redis a round trip of its own
// and the blocking read that follows. What could
// make something due sooner ends the wait with an entry of the wake
// stream (a delayed task due within maxBlock, a dead worker's leases
// taken back, see lib/schedule.lua and lib/reclaim.lua), and a wait that
// saw one is followed at once by a full look. So a worker that takes one
// task after the other as they arrive looks at the delayed set and the
// leases about as often as it would while waiting (once in the last
// quarter of each second, rather than at its end), and when woken. A look that does not end a wait (the worker is busy, or has no
// plan) is always full.
//
// A quick look that reads no entry (another worker took the one that
// ended the wait) does not look for the stream's newest entry either:
// every entry up to the one the wait returned has been delivered, so the
// next wait starts after that one. An entry added meanwhile and taken by
// another worker ends that wait at once, which costs a look. (A wait
// that returned more entries, to start after the newest, cost six
// allocations per task more at full load, where waits end with many.)
func quickLook(prev waitPlan) string { return prev.quickUntil }

// fetchCall returns the KEYS and ARGV of the fetch script for a look by
// worker; prev is the worker's plan so far, and quickUntil what the look
// passes as its ARGV[9] ("" for a full look).
func (b *Backend) fetchCall(worker string, max int, lease time.Duration, prev waitPlan, quickUntil string) (keys, args []string) {
	keys = []string{b.streamKey(), b.delayedKey(), b.leasesKey(), b.wakeKey(), b.hooksKey()}
	args = make([]string, 0, 11+len(recordFieldNames))
	args = append(args, group, worker, strconv.Itoa(max), strconv.FormatInt(lease.Milliseconds(), 10), strconv.Itoa(promoteBatch))
	if b.cluster {
		args = append(args, "", "0")
	} else {
		args = append(args, b.cfg.Prefix, strconv.FormatInt(b.retentionMS(), 10))
	}
	wantWake := ""
	if prev.wakeID == "" {
		wantWake = "1"
	}
	args = append(args, wantWake, quickUntil, strconv.FormatInt(maxBlock.Milliseconds(), 10), b.startsKey(""))
	if !b.cluster {
		args = append(args, recordFieldNames[:]...)
	}
	return keys, args
}

// take runs the fetch script alone and returns what it leased and the
// worker's next plan. Unless the client is a Cluster client, the script
// also reads the records of the tasks it leases (see lease). It waits for
// the script's answer whatever happens to ctx, as waitAndTake does: a
// script sent has leased what it took, which must not be dropped.
func (b *Backend) take(ctx context.Context, worker string, max int, lease time.Duration, prev waitPlan) ([]takenEntry, waitPlan, error) {
	ctx, cancel := b.bound(context.WithoutCancel(ctx), 0)
	defer cancel()
	keys, args := b.fetchCall(worker, max, lease, prev, "")
	return b.readTaken(ctx, fetchScript.exec(ctx, b.client, keys, args), prev)
}

// waitAndTake waits up to wait for an entry after the plan's (a blocking
// XREAD) and then runs the fetch script, in one round trip (two on a
// Cluster client, below). It waits for
// the script's answer whatever happens to ctx: when ctx is cancelled, an
// entry added to the wake stream ends the wait (see Fetch).
func (b *Backend) waitAndTake(ctx context.Context, worker string, max int, lease time.Duration, prev waitPlan, wait time.Duration) ([]takenEntry, waitPlan, error) {
	ms := blockMS(wait)
	callCtx, cancel := b.bound(context.WithoutCancel(ctx), time.Duration(ms)*time.Millisecond)
	defer cancel()
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		if errors.Is(ctx.Err(), context.Canceled) {
			b.wakeFetchers()
		}
	})
	defer func() {
		if !stop() {
			<-woken // no goroutine outlives the call
		}
	}()
	c := b.client
	keys, args := b.fetchCall(worker, max, lease, prev, quickLook(prev))
	xread := c.B().Xread().Count(1).Block(ms).Streams().Key(b.streamKey(), b.wakeKey()).Id(prev.lastID, prev.wakeID).Build()
	var res []rueidis.RedisResult
	if b.cluster {
		// Two round trips: rueidis (v1.0.79 and v1.0.80) panics on a
		// Cluster round trip that holds a blocking command when the
		// cluster answers it ASK (a slot being moved): it takes the reply
		// to its own ASKING for one of the commands'. Alone, the wait
		// may read that reply instead of its own, which only costs a full
		// look (see below).
		res = []rueidis.RedisResult{c.Do(callCtx, xread)}
		if err := res[0].Error(); err != nil && !rueidis.IsRedisNil(err) {
			if _, isReply := rueidis.IsRedisErr(err); !isReply {
				return nil, waitPlan{wakeID: prev.wakeID}, b.wrap(callCtx, "wait for tasks", err)
			}
		}
		res = append(res, c.Do(callCtx, fetchScript.evalsha(c, keys, args)))
	} else {
		res = c.DoMulti(callCtx, xread, fetchScript.evalsha(c, keys, args))
	}
	if err := res[0].Error(); err != nil && !rueidis.IsRedisNil(err) {
		if _, isReply := rueidis.IsRedisErr(err); !isReply {
			return nil, waitPlan{wakeID: prev.wakeID}, b.wrap(callCtx, "wait for tasks", err)
		}
		// Redis refused the XREAD and ran the script all the same: what
		// the script leased must not be dropped.
		b.log.Warn("flows: waiting for tasks failed", "err", err)
	}
	wakeSeen, seen := false, prev.lastID
	if got, err := res[0].AsXRead(); err == nil {
		if woke := got[b.wakeKey()]; len(woke) > 0 {
			prev.wakeID = woke[len(woke)-1].ID
			wakeSeen = true
		}
		if added := got[b.streamKey()]; len(added) > 0 {
			seen = added[len(added)-1].ID
		}
	} else if !rueidis.IsRedisNil(err) {
		wakeSeen = true // not the wait's reply: look fully, to be safe
	}
	reply := res[1]
	if noScript(reply.Error()) {
		reply = c.Do(callCtx, fetchScript.eval(c, keys, args))
	}
	taken, next, err := b.readTaken(callCtx, reply, prev)
	if next.lastID == "+" {
		// A quick look that read no entry: wait after the newest the
		// wait saw (see quickLook).
		next.lastID = seen
	}
	if wakeSeen || err != nil {
		// Something may be due sooner than the plan said: look again,
		// fully, at once (see quickLook).
		next.until, next.quickUntil = time.Time{}, ""
	}
	return taken, next, err
}

// blockMS is wait in whole milliseconds, rounded up, at least one: what
// XREAD's BLOCK takes (zero would block for ever).
func blockMS(wait time.Duration) int64 {
	return max(int64((wait+time.Millisecond-1)/time.Millisecond), 1)
}

// wakeFetchers adds an entry to the wake stream, which ends the wait of
// every Fetch of the queue (see Fetch).
func (b *Backend) wakeFetchers() {
	ctx, cancel := b.bound(context.Background(), 0)
	defer cancel()
	if err := b.client.Do(ctx, b.wakeCommand()).Error(); err != nil {
		b.log.Warn("flows: could not end the wait of a cancelled fetch; it ends within a second", "err", err)
	}
}

// readTaken reads the fetch script's reply: the entries it leased and the
// worker's next plan, made from prev. ctx is the context of the call, from
// bound.
func (b *Backend) readTaken(ctx context.Context, reply rueidis.RedisResult, prev waitPlan) ([]takenEntry, waitPlan, error) {
	next := waitPlan{wakeID: prev.wakeID}
	res, err := reply.ToArray()
	if err != nil {
		return nil, next, b.wrap(ctx, "fetch tasks", err)
	}
	if len(res) != 6 {
		return nil, next, fmt.Errorf("redisbackend: fetch tasks: unexpected reply of %d values", len(res))
	}
	items, err := res[0].ToArray()
	if err != nil {
		return nil, next, fmt.Errorf("redisbackend: fetch tasks: %w", err)
	}
	taken := make([]takenEntry, len(items))
	for i, item := range items {
		parts, err := item.ToArray()
		if err != nil || len(parts) < 4 {
			return nil, next, fmt.Errorf("redisbackend: fetch tasks: malformed entry: %v", err)
		}
		e := &taken[i]
		e.entry, _ = parts[0].ToString()
		e.token, _ = parts[2].ToString()
		e.ended, _ = parts[3].ToString()
		fields, _ := parts[1].AsStrSlice()
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == streamField {
				e.taskID = fields[i+1]
			}
		}
		if len(parts) > 4 {
			if err := hmgetValues(parts[4], e.rec[:]); err != nil {
				return nil, next, fmt.Errorf("redisbackend: fetch tasks: malformed record: %w", err)
			}
			e.read = true
		}
	}
	next.lastID, _ = res[3].ToString()
	if wake, _ := res[4].ToString(); wake != "" {
		next.wakeID = wake
	}
	next.quickUntil, _ = res[5].ToString()
	if next.lastID == "" || next.wakeID == "" {
		return taken, next, nil // more may be ready: look again at once
	}
	wait := maxBlock
	for _, r := range res[1:3] {
		if ms, err := r.AsInt64(); err == nil && ms >= 0 {
			wait = min(wait, time.Duration(ms)*time.Millisecond)
		}
	}
	next.until = time.Now().Add(wait)
	return taken, next, nil
}

// lease turns entries taken by fetchScript into leases. Unless the
// script has read them already, each task's attempt is incremented (and,
// for an entry taken over, its prev and counted fields set) and its record read, with
// its progress state (see FetchWithState), and kept for the retention
// period, in one pipelined round trip. An entry whose
// task record is gone (expired) is removed from the queue. The round trip
// is not cut short by ctx: the entries are held already, and are better
// run than left to expire.
func (b *Backend) lease(ctx context.Context, taken []takenEntry, lease time.Duration) ([]*queue.Lease, []progress.State, error) {
	ctx, cancel := b.bound(context.WithoutCancel(ctx), 0)
	defer cancel()
	c := b.client
	deadline := time.Now().Add(lease)
	var cmds rueidis.Commands
	for i, e := range taken {
		if e.read {
			continue
		}
		if !queue.ValidID(e.taskID) {
			taken[i].taskID = "-" // an id no task has: its record is missing
		}
		key := b.taskKey(taken[i].taskID)
		cmds = append(cmds, c.B().Hincrby().Key(key).Field(recAttempt).Increment(1).Build())
		if e.ended != "" {
			cmds = append(cmds, c.B().Hset().Key(key).FieldValue().FieldValue(recPrev, e.ended).FieldValue(recCounted, e.ended).Build())
		}
		cmds = append(cmds,
			c.B().Hmget().Key(key).Field(recordFieldNames[:]...).Build(),
			b.extendTask(taken[i].taskID, b.cfg.Retention),
		)
	}
	var res []rueidis.RedisResult
	if len(cmds) > 0 {
		res = c.DoMulti(ctx, cmds...)
	}
	leases := make([]*queue.Lease, 0, len(taken))
	states := make([]progress.State, 0, len(taken))
	var firstErr error
	for _, e := range taken {
		fields := e.rec
		if !e.read {
			n := 3 // the commands sent for e, the HMGET last but one
			if e.ended != "" {
				n = 4
			}
			var err error
			fields, err = readRecord(res[n-2])
			res = res[n:]
			if err != nil {
				// Still held: the entry is taken over once the lease passes.
				if firstErr == nil {
					firstErr = b.wrap(ctx, "lease task "+e.taskID, err)
				}
				continue
			}
		}
		t, ok, err := decodeRecord(e.taskID, fields)
		if err != nil || !ok {
			b.log.Warn("flows: dropping a queue entry without a usable task record",
				"task_id", e.taskID, "entry", e.entry, "err", err)
			if _, err := b.acks.do(ctx, ackCall{taskID: e.taskID, entry: e.entry, token: e.token}); err != nil {
				b.log.Warn("flows: could not drop a queue entry", "entry", e.entry, "err", err)
			}
			if !ok && !e.read && fields[iState] == "" {
				// What HINCRBY left of a missing record (a hash with
				// a progress snapshot is the store's): deleted only
				// if it is still that (see drop_orphan.lua).
				missing := ""
				if fields[iRec] == "" {
					missing = "1"
				}
				_ = dropOrphanScript.exec(ctx, c, []string{b.taskKey(e.taskID)}, []string{missing}).Error()
			}
			continue
		}
		leases = append(leases, &queue.Lease{Task: t, Token: makeToken(e.entry, e.token), Deadline: deadline})
		states = append(states, progress.State(fields[iState]))
	}
	if len(leases) > 0 {
		return leases, states, nil // the rest is taken over later
	}
	return nil, nil, firstErr
}
