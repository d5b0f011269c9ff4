package redisbackend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Caller limits (queue.CallerLimits). Each caller has two keys under a hash
// tag of its own, made of a hash of its name (so that any name makes a
// short, safe key):
//
//	<prefix>:{c:<hash>}:rate      the theoretical arrival time of its next start
//	<prefix>:{c:<hash>}:pending   its waiting tasks, a sorted set of ids
//
// On a single Redis the check runs in create_task.lua, in the round trip
// that creates the task: a limited start costs no round trip more. An
// idempotent start, and every start on a Cluster client (whose caller keys
// are on another slot than the task's), runs caller_admit.lua first: one
// round trip more. The pending set counts a task from its admission; it is
// pruned, in Go, only when it is full: the tasks that no longer wait
// (leased, cancelled, ended, gone) leave it, and the start is tried once
// more.

// callerKeys returns the rate key and the pending set of caller.
func (b *Backend) callerKeys(caller string) (rate, pending string) {
	sum := sha256.Sum256([]byte(caller))
	base := b.cfg.Prefix + ":{c:" + hex.EncodeToString(sum[:12]) + "}:"
	return base + "rate", base + "pending"
}

// callerArgs returns the values caller_admit.lua and create_task.lua take
// after the caller's two keys: starts, per (ms), max pending, how long to keep
// the pending set (ms) and the task's id.
func (b *Backend) callerArgs(lim queue.CallerLimits, id string) []string {
	return []string{
		strconv.Itoa(lim.Starts), strconv.FormatInt(lim.Per.Milliseconds(), 10), strconv.Itoa(lim.MaxPending),
		strconv.FormatInt(b.retentionMS(), 10), id,
	}
}

// AdmitCaller counts one start of caller, for the task id, against lim,
// for a queue.Broker with BrokerConfig.CallerLimits: a
// *queue.CallerLimitError when the caller is over a limit, and then
// nothing is counted. One round trip (caller_admit.lua), more when the
// caller's pending set is full and must be pruned.
func (b *Backend) AdmitCaller(ctx context.Context, caller string, lim queue.CallerLimits, id string) error {
	rate, pending := b.callerKeys(caller)
	args := b.callerArgs(lim, id)
	return b.withPruning(ctx, pending, func() error {
		err := callerAdmitScript.exec(ctx, b.client, []string{rate, pending}, args).Error()
		if le := limitError(err); le != nil {
			return le
		}
		return b.wrap(ctx, "admit caller", err)
	})
}

// CreateAndEnqueueLimited is CreateAndEnqueueNew with the caller limits
// lim of caller checked, and the start counted, in the same round trip
// on a single Redis (see AdmitCaller for what a refusal is). On a
// Cluster client it is AdmitCaller, then CreateAndEnqueueNew. Like
// CreateAndEnqueueNew, it is for a task whose id queue.NewID drew for
// it, which it takes as free without checking it (no EXISTS): a
// queue.Broker gives it the tasks of a limited caller that have no
// idempotency key. Given an id that is taken, it overwrites that task's
// record and snapshot.
func (b *Backend) CreateAndEnqueueLimited(ctx context.Context, t *queue.Task, caller string, lim queue.CallerLimits) error {
	if t == nil || !queue.ValidID(t.ID) {
		return fmt.Errorf("redisbackend: enqueue: %w", queue.ErrInvalidID)
	}
	if b.cluster {
		if err := b.AdmitCaller(ctx, caller, lim, t.ID); err != nil {
			return err
		}
		return b.CreateAndEnqueueNew(ctx, t)
	}
	rate, pending := b.callerKeys(caller)
	limits := append([]string{rate, pending}, b.callerArgs(lim, t.ID)...)
	return b.withPruning(ctx, pending, func() error {
		err := b.create(ctx, t, limits, false)
		if le := limitError(err); le != nil {
			return le
		}
		return err
	})
}

// limitError returns the *queue.CallerLimitError that err, a LIMIT error
// reply of admit_caller, stands for, or nil when err is not one.
func limitError(err error) *queue.CallerLimitError {
	if replyCode(err) != "LIMIT" {
		return nil
	}
	re, _ := rueidis.IsRedisErr(err)
	fields := strings.Fields(re.Error())
	if len(fields) >= 2 && fields[1] == queue.LimitPending {
		return &queue.CallerLimitError{Limit: queue.LimitPending}
	}
	ms := int64(0)
	if len(fields) >= 3 {
		ms, _ = strconv.ParseInt(fields[2], 10, 64)
	}
	return &queue.CallerLimitError{Limit: queue.LimitStarts, RetryAfter: time.Duration(ms) * time.Millisecond}
}

// withPruning runs try, and when it is refused for the pending cap, prunes
// the pending set and, if that freed a place, runs try once more.
func (b *Backend) withPruning(ctx context.Context, pending string, try func() error) error {
	err := try()
	if le, ok := err.(*queue.CallerLimitError); !ok || le.Limit != queue.LimitPending {
		return err
	}
	freed, perr := b.prunePending(ctx, pending)
	if perr != nil {
		return perr
	}
	if freed == 0 {
		return err
	}
	return try()
}

// prunePending removes from the pending set the tasks that no longer wait
// for their first run, and those admitted over a minute ago whose record
// never came, and returns how many it removed. Two round trips: the set
// with the records of its tasks, then the removal.
func (b *Backend) prunePending(ctx context.Context, pending string) (int, error) {
	c := b.client
	members, err := c.Do(ctx, c.B().Zrange().Key(pending).Min("0").Max("-1").Withscores().Build()).AsZScores()
	if err != nil {
		return 0, b.wrap(ctx, "read pending tasks", err)
	}
	if len(members) == 0 {
		return 0, nil
	}
	cmds := make(rueidis.Commands, len(members))
	for i, m := range members {
		cmds[i] = c.B().Hmget().Key(b.taskKey(m.Member)).Field(fieldState, recAttempt, recCancelled).Build()
	}
	now := time.Now().UnixMilli()
	var gone []string
	for i, res := range c.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			return 0, b.wrap(ctx, "read pending tasks", err)
		}
		state, _ := vals[0].ToString()
		attempt, _ := vals[1].ToString()
		cancelled, _ := vals[2].ToString()
		switch {
		case state == "":
			if now-int64(members[i].Score) > time.Minute.Milliseconds() {
				gone = append(gone, members[i].Member)
			}
		case state != string(progress.StatePending), attempt != "" && attempt != "0", cancelled == "1":
			gone = append(gone, members[i].Member)
		}
	}
	if len(gone) == 0 {
		return 0, nil
	}
	n, err := c.Do(ctx, c.B().Zrem().Key(pending).Member(gone...).Build()).AsInt64()
	if err != nil {
		return 0, b.wrap(ctx, "prune pending tasks", err)
	}
	return int(n), nil
}
