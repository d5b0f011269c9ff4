package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// A lease token is "<stream entry id>/<n>", n being the number of the
// entry's lease, which differs from the number of every earlier lease of
// the entry (see lua/fetch.lua). The token is also the lease's member in
// the leases set, scored by its deadline (see lua/lib/token.lua): a lease
// script finds it there by the token alone, and a lease that was taken
// over, acknowledged or given back is no longer there, even when the
// same worker name holds the entry again.
func makeToken(entry, n string) string { return entry + "/" + n }

func parseToken(token string) (entry, n string, ok bool) {
	entry, n, ok = strings.Cut(token, "/")
	if id, err := parseEventID(entry); err != nil || id.tag != "" || entry == "" || n == "" {
		return "", "", false
	}
	return entry, n, ok
}

// leaseKeys are the KEYS of extendScript and ackScript.
func (b *Backend) leaseKeys() []string {
	return []string{b.streamKey(), b.leasesKey()}
}

// onLease runs a lease script with ARGV entry, token, extra... and turns
// its 0 into queue.ErrLeaseLost. The task hash's expiry is moved to at
// least the retention plus keep from now in the same round trip (whether
// or not the lease is still held: it only keeps the task longer). Only
// when Redis has lost the script (a restart) does it take a second round
// trip, which loads it. ctx comes from bound.
func (b *Backend) onLease(ctx context.Context, op string, s *script, l *queue.Lease, keys []string, keep time.Duration, extra ...string) error {
	_, err := b.onLeaseAlso(ctx, op, s, l, keys, keep, nil, extra...)
	return err
}

// onLeaseAlso does what onLease does and sends the commands also after
// the script, in the same round trip; it returns their results, in order,
// when the script succeeded.
func (b *Backend) onLeaseAlso(ctx context.Context, op string, s *script, l *queue.Lease, keys []string, keep time.Duration, also rueidis.Commands, extra ...string) ([]rueidis.RedisResult, error) {
	if l == nil || l.Task == nil {
		return nil, fmt.Errorf("redisbackend: %s: %w: no lease", op, queue.ErrLeaseLost)
	}
	entry, token, ok := parseToken(l.Token)
	if !ok {
		return nil, fmt.Errorf("redisbackend: %s task %s: %w: token %q is not this backend's", op, l.Task.ID, queue.ErrLeaseLost, l.Token)
	}
	keepRecord := b.extendTask(l.Task.ID, addDur(b.cfg.Retention, max(keep, 0)))
	reply, res := b.runLeaseScript(ctx, s, keys, append([]string{entry, token}, extra...), append(rueidis.Commands{keepRecord}, also...))
	n, err := reply.AsInt64()
	if err != nil {
		return nil, b.wrap(ctx, op+" task "+l.Task.ID, err)
	}
	if err := res[0].Error(); err != nil {
		// It only shortens how long the record is kept.
		b.log.Warn("flows: could not refresh the expiry of a task record", "task_id", l.Task.ID, "err", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("redisbackend: %s task %s: %w", op, l.Task.ID, queue.ErrLeaseLost)
	}
	return res[1:], nil
}

// runLeaseScript runs s with keys and args as EVALSHA, the commands also
// after it in the same round trip, and returns the script's reply and
// theirs. Only when Redis has lost the script (a restart) does it take a
// second round trip, which runs it as EVAL. In durable mode, a script of
// waitFor is followed by WAIT in the same round trip (see durable.go):
// when the replicas do not confirm it, the reply of an accepting script
// is an error wrapping errNotReplicated, and an ending one is logged.
func (b *Backend) runLeaseScript(ctx context.Context, s *script, keys, args []string, also rueidis.Commands) (rueidis.RedisResult, []rueidis.RedisResult) {
	return b.runLeaseScriptAfter(ctx, nil, s, keys, args, also)
}

// runLeaseScriptAfter is runLeaseScript with the commands before sent
// ahead of the script, in its round trip; their replies are not returned.
func (b *Backend) runLeaseScriptAfter(ctx context.Context, before rueidis.Commands, s *script, keys, args []string, also rueidis.Commands) (rueidis.RedisResult, []rueidis.RedisResult) {
	kind := waitNever
	if b.durable() {
		kind = waitFor[s]
	}
	_, reply, res := b.runScriptAfter(ctx, before, s, kind, keys, args, also)
	return reply, res
}

// runScript is runLeaseScript with the WAIT that follows the script (or
// none) given by kind.
func (b *Backend) runScript(ctx context.Context, s *script, kind waitKind, keys, args []string, also rueidis.Commands) (rueidis.RedisResult, []rueidis.RedisResult) {
	_, reply, res := b.runScriptAfter(ctx, nil, s, kind, keys, args, also)
	return reply, res
}

// runScriptAfter is runScript with the commands before sent ahead of the
// script, in its round trip; it returns their replies too (prior), which
// it does not look at. A NOSCRIPT fallback resends the script alone:
// before and also are sent once.
func (b *Backend) runScriptAfter(ctx context.Context, before rueidis.Commands, s *script, kind waitKind, keys, args []string, also rueidis.Commands) (prior []rueidis.RedisResult, reply rueidis.RedisResult, after []rueidis.RedisResult) {
	return b.runScriptOn(ctx, b.client, before, s, kind, keys, args, also)
}

// runScriptOn is runScriptAfter on client c: the Backend's, or a
// connection of its own (see Heartbeat).
func (b *Backend) runScriptOn(ctx context.Context, c rueidis.CommandClient, before rueidis.Commands, s *script, kind waitKind, keys, args []string, also rueidis.Commands) (prior []rueidis.RedisResult, reply rueidis.RedisResult, after []rueidis.RedisResult) {
	cmds := make(rueidis.Commands, 0, 2+len(before)+len(also))
	cmds = append(append(append(cmds, before...), s.evalsha(c, keys, args)), also...)
	if kind != waitNever {
		cmds = append(cmds, b.waitCommand())
	}
	all := c.DoMulti(ctx, cmds...)
	prior, res := all[:len(before):len(before)], all[len(before):]
	if noScript(res[0].Error()) {
		if kind == waitNever {
			res[0] = c.Do(ctx, s.eval(c, keys, args))
		} else {
			again := c.DoMulti(ctx, s.eval(c, keys, args), b.waitCommand())
			res[0], res[len(res)-1] = again[0], again[1]
		}
	}
	if kind != waitNever {
		wait := res[len(res)-1]
		res = res[:len(res)-1]
		if err := b.replicated(wait); err != nil && res[0].Error() == nil {
			if kind == waitAccepts {
				res[0] = rueidis.NewErrorResult(err)
			} else {
				b.log.Warn("flows: the end of a lease is not confirmed by the replicas; after a failover the task may run again", "script", s.name, "err", err)
			}
		}
	}
	return prior, res[0], res[1:]
}

// Extend implements queue.Backend in one round trip, which also reads
// the task record's cancelled flag: a worker that missed a cancellation
// on the pub/sub channel learns of it here (queue.ErrCancelled). The
// deadline Fetch goes by is kept in Redis, on the server's clock;
// l.Deadline follows it on the caller's.
func (b *Backend) Extend(ctx context.Context, l *queue.Lease, lease time.Duration) error {
	if lease <= 0 {
		lease = defaultLease
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	var also []rueidis.Completed
	if l != nil && l.Task != nil && queue.ValidID(l.Task.ID) {
		c := b.client
		also = append(also, c.B().Hget().Key(b.taskKey(l.Task.ID)).Field(recCancelled).Build())
	}
	res, err := b.onLeaseAlso(ctx, "extend lease of", extendScript, l, b.leaseKeys(), 0, also, strconv.FormatInt(lease.Milliseconds(), 10))
	if err != nil {
		return err
	}
	l.Deadline = time.Now().Add(lease)
	if len(res) > 0 {
		flag, err := res[0].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			// The lease is extended; the flag is read again next time.
			b.log.Warn("flows: could not read the cancelled flag of a task", "task_id", l.Task.ID, "err", err)
		}
		if flag == "1" {
			return fmt.Errorf("redisbackend: extend lease of task %s: %w", l.Task.ID, queue.ErrCancelled)
		}
	}
	return nil
}

// Ack implements queue.Backend in one round trip, which concurrent Acks
// share (see batcher). The task record stays readable for the retention
// period.
//
// In durable mode (Config.WaitReplicas), Ack releases the lease only if
// the task has ended (SUCCESS or FAILURE) or has no progress record, as
// the primary sees it in the same script; otherwise it fails and the
// task keeps its lease, and runs again once the lease passes. A worker
// acknowledges a task it found ended or gone, and what it found may come
// from another server than the one its acknowledgement reaches: a former
// primary rejoining after a failover as a replica, empty until it has
// synced, or a primary that died with the task's end before a replica had
// it. The check keeps such an acknowledgement from deleting the entry of
// a task that has not ended on the new primary, which no worker would
// ever run again.
func (b *Backend) Ack(ctx context.Context, l *queue.Lease) error {
	if l == nil || l.Task == nil {
		return fmt.Errorf("redisbackend: ack: %w: no lease", queue.ErrLeaseLost)
	}
	entry, token, ok := parseToken(l.Token)
	if !ok {
		return fmt.Errorf("redisbackend: ack task %s: %w: token %q is not this backend's", l.Task.ID, queue.ErrLeaseLost, l.Token)
	}
	call := ackCall{taskID: l.Task.ID, entry: entry, token: token, ended: b.durable()}
	if l.NoRun {
		call.noRun = l
	}
	_, err := b.acks.do(ctx, call)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("redisbackend: ack task %s: %w", l.Task.ID, err)
	}
	return err
}

// ackCall is one Ack's share of ackScript. With ended set, the entry is
// released only if the task has ended or has no progress record, as the
// server that holds the lease sees it (see ack.lua and Ack). noRun is
// the lease when it did not run the flow (queue.Lease.NoRun): it is
// counted in the same round trip (see norun.go).
type ackCall struct {
	taskID, entry, token string
	ended                bool
	noRun                *queue.Lease
}

// errNotEnded is the error of an Ack, in durable mode, of a task that has
// not ended on the primary.
var errNotEnded = errors.New("the task has not ended on this primary (its end may have been lost in a failover); it runs again once its lease passes")

// runAcks acknowledges a batch of leases in one round trip: one
// ackScript and, for each task, an expiry of its hash at least the
// retention from now, then a no_run.lua for each lease that did not run
// its flow.
func (b *Backend) runAcks(ctx context.Context, calls []*batchCall[ackCall, struct{}]) {
	args := make([]string, 1, 1+3*len(calls))
	args[0] = group
	keep := make(rueidis.Commands, 0, len(calls))
	var noRuns []*queue.Lease
	for _, call := range calls {
		task := ""
		if call.item.ended && !b.cluster && queue.ValidID(call.item.taskID) {
			task = b.taskKey(call.item.taskID)
		}
		args = append(args, call.item.entry, call.item.token, task)
		keep = append(keep, b.extendTask(call.item.taskID, b.cfg.Retention))
	}
	for _, call := range calls {
		if cmd, ok := b.noRunCommand(call.item.noRun); ok {
			keep = append(keep, cmd)
			noRuns = append(noRuns, call.item.noRun)
		}
	}
	reply, res := b.runLeaseScript(ctx, ackScript, b.leaseKeys(), args, keep)
	for i, l := range noRuns {
		b.noRunCounted(ctx, l, res[len(calls)+i])
	}
	replies, err := batchReplies(reply, len(calls))
	for i, call := range calls {
		id := call.item.taskID
		if err != nil {
			call.err = b.wrap(ctx, "ack task "+id, err)
			continue
		}
		switch n, _ := replies[i].AsInt64(); n {
		case 0:
			call.err = fmt.Errorf("redisbackend: ack task %s: %w", id, queue.ErrLeaseLost)
			continue
		case 2:
			call.err = fmt.Errorf("redisbackend: ack task %s: %w", id, errNotEnded)
			continue
		}
		if err := res[i].Error(); err != nil {
			// It only shortens how long the record is kept.
			b.log.Warn("flows: could not refresh the expiry of a task record", "task_id", id, "err", err)
		}
	}
}

// takeBackEnd takes back what end_attempt.lua counted for the lost lease
// of task id, in one round trip: its hand-back (a hook retry for
// queue.EndHooksPending), when handBack is set, and its count as a lease
// that did not run the flow, when noRun is.
func (b *Backend) takeBackEnd(ctx context.Context, id string, why queue.AttemptEnd, handBack, noRun bool) {
	c := b.client
	var cmds rueidis.Commands
	if handBack {
		field := recHandBacks
		if why == queue.EndHooksPending {
			field = recHookRetries
		}
		cmds = append(cmds, c.B().Hincrby().Key(b.taskKey(id)).Field(field).Increment(-1).Build())
	}
	if noRun {
		cmds = append(cmds, c.B().Hincrby().Key(b.taskKey(id)).Field(recNoRuns).Increment(-1).Build())
	}
	if len(cmds) == 0 {
		return
	}
	for _, res := range c.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			b.log.Warn("flows: could not take back the hand-back of a lost lease; the task gets one run more", "task_id", id, "err", err)
			return
		}
	}
}

// Retry implements queue.Backend: a task due at once goes to the end of
// the stream, behind the tasks ready before it, in one round trip; one due
// later waits in the delayed set, unless it has been cancelled and is
// given back for a retry of its flow (why.Counts()): then, after the
// script, the record's flag is read (a second round trip) and the task
// made ready (see Cancel for why this order leaves no cancelled task
// delayed for a run of its flow). A hand-back (why.Counts() is false:
// the progress store down, say) waits for its time, cancelled or not,
// and so does a task given back for its finish hooks
// (queue.EndHooksPending), which has ended: their flag is not read for
// that. A task of a limited flow waits in its flow's gate instead (see
// limit.go), unless the lease tells that it was cancelled (it waits for
// no slot, see the gate of Memory): its flag is read after the script
// whatever why, and a cancelled one made ready, since it may have been
// cancelled while leased. So a hand-back of a task cancelled during its
// lease in a limited flow is ready at once, once: the lease after it
// tells the flag.
//
// why goes into the record's prev field (and, when it counts, its
// counted field, see queue.Task.CountedEnd), the lease's attempt into its
// prevof field (see summaryOf), and a hand-back that is not an attempt
// (why.Counts() is false) is counted in its handbacks field (a
// queue.EndHooksPending in its hookretries field instead), and a lease
// that did not run the flow (l.NoRun) in its noruns field, only while
// the lease is held: the end of a lease taken over by another
// worker, or given back already, must not be told as the end of the
// attempt before the current one. On a single Redis the retry script
// writes them after checking the lease's holder, before it queues the
// task, so that the fetch that reads the task again reads them. On a
// Redis Cluster client, where the task hash and the queue's keys are on
// different slots, a script on the task hash writes them first, in a
// round trip of its own (as the commands that wrote them before did),
// only while the record's attempt is the lease's and its end has not
// been recorded (see end_attempt.lua); a lease lost before a fetch took
// the task over passes that check, and then the retry script finds it
// lost: the fetch that takes the task over sets prev and counted again, and the
// hand-back (and the count in noruns) is taken back in one more round
// trip (see takeBackEnd). Until then, or if that
// fails, the task has one hand-back too many, which gives it one run
// more, never one fewer.
//
// A task given back for its finish hooks (queue.EndHooksPending) does
// not wait in its flow's gate, if its flow is limited: its flow does not
// run again (see limit.go). Delayed, it is also written into the hooks
// set, which Depth counts apart.
func (b *Backend) Retry(ctx context.Context, l *queue.Lease, at time.Time, why queue.AttemptEnd) error {
	var id string
	attempt := 0
	if l != nil && l.Task != nil {
		id, attempt = l.Task.ID, l.Task.Attempt
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	taskKey, handBack, noRun := "", "", ""
	if l != nil && l.NoRun {
		noRun = "1"
	}
	counted := false // the end recorded ahead of the script (Cluster)
	if why != "" && queue.ValidID(id) {
		switch {
		case why == queue.EndHooksPending:
			handBack = "hooks"
		case !why.Counts():
			handBack = "1"
		}
		if _, _, ok := parseToken(l.Token); ok && b.cluster {
			n, err := endAttemptScript.exec(ctx, b.client, []string{b.taskKey(id)},
				[]string{strconv.Itoa(attempt), string(why), handBack, noRun}).AsInt64()
			if err != nil {
				return b.wrap(ctx, "retry task "+id, err)
			}
			counted = n == 1
		} else if !b.cluster {
			taskKey = b.taskKey(id)
		}
	}
	// A task given back for its finish hooks has ended: its next lease
	// runs the hooks, not its flow, and takes no slot of the flow's
	// limits. Nor does a cancelled one: its worker ends it without
	// running it. Any other waits for a slot again.
	gated := ""
	if l != nil && l.Task != nil && l.Task.Limit.On() && why != queue.EndHooksPending && !l.Task.Cancelled {
		gated = l.Task.Flow
	}
	keys := []string{b.streamKey(), b.leasesKey(), b.delayedKey(), b.wakeKey(), b.hooksKey()}
	if gated != "" {
		keys = append(keys, b.gateKey(gated))
	}
	err := b.onLease(ctx, "retry", retryScript, l, keys,
		time.Until(at), group, id, strconv.FormatInt(at.UnixMilli(), 10), strconv.FormatInt(time.Now().UnixMilli(), 10),
		strconv.FormatInt(maxBlock.Milliseconds(), 10), taskKey, string(why), handBack, strconv.Itoa(attempt), noRun)
	if err != nil {
		if counted && errors.Is(err, queue.ErrLeaseLost) {
			b.takeBackEnd(ctx, id, why, handBack != "", noRun != "")
		}
		return err
	}
	if gated != "" || why.Counts() && time.Until(at) > 0 {
		c := b.client
		flag, err := c.Do(ctx, c.B().Hget().Key(b.taskKey(id)).Field(recCancelled).Build()).ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return b.wrap(ctx, "retry task "+id, err)
		}
		if flag == "1" {
			return b.makeReady(ctx, id, gated)
		}
	}
	return nil
}
