package redisbackend

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// A lease token is "<stream entry id>/<n>", n being the number the
// holders hash records for the entry's current lease: a lease that was
// taken over, acknowledged or given back no longer matches, even when the
// same worker name holds the entry again.
func makeToken(entry, n string) string { return entry + "/" + n }

func parseToken(token string) (entry, n string, ok bool) {
	entry, n, ok = strings.Cut(token, "/")
	if _, err := parseEventID(entry); err != nil || entry == "" || n == "" {
		return "", "", false
	}
	return entry, n, ok
}

// leaseKeys are the KEYS of extendScript and ackScript.
func (b *Backend) leaseKeys() []string {
	return []string{b.streamKey(), b.leasesKey(), b.holdersKey()}
}

// holderCheck opens every script that acts on a lease: it returns 0
// unless the holders hash KEYS[3] records token ARGV[2] for entry ARGV[1].
const holderCheck = `
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
`

// extendScript moves the deadline of a held lease to the server's clock
// plus the lease.
//
//	KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash
//	ARGV[1] entry id, ARGV[2] token, ARGV[3] lease (ms)
//
// It returns 1, or 0 when the lease is no longer held.
var extendScript = rueidis.NewLuaScript(holderCheck + `
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], clock + tonumber(ARGV[3]), ARGV[1])
return 1
`)

// ackScript removes a held entry from the queue for good.
//
//	KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash
//	ARGV[1] entry id, ARGV[2] token, ARGV[3] consumer group
//
// It returns 1, or 0 when the lease is no longer held.
var ackScript = rueidis.NewLuaScript(holderCheck + `
redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`)

// retryScript removes a held entry and queues its task again: at the end
// of the stream when it is due already, in the delayed set otherwise.
//
//	KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash,
//	KEYS[4] delayed set
//	ARGV[1] entry id, ARGV[2] token, ARGV[3] consumer group,
//	ARGV[4] task id, ARGV[5] due time (Unix ms), ARGV[6] now (Unix ms)
//
// It returns 1, or 0 when the lease is no longer held.
var retryScript = rueidis.NewLuaScript(holderCheck + `
redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if tonumber(ARGV[5]) <= tonumber(ARGV[6]) then
  redis.call('XADD', KEYS[1], '*', 'task', ARGV[4])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
end
return 1
`)

// onLease runs a lease script with ARGV entry, token, extra... and turns
// its 0 into queue.ErrLeaseLost.
func (b *Backend) onLease(ctx context.Context, op string, script *rueidis.Lua, l *queue.Lease, keys []string, extra ...string) error {
	if l == nil || l.Task == nil {
		return fmt.Errorf("redisbackend: %s: %w: no lease", op, queue.ErrLeaseLost)
	}
	entry, token, ok := parseToken(l.Token)
	if !ok {
		return fmt.Errorf("redisbackend: %s task %s: %w: token %q is not this backend's", op, l.Task.ID, queue.ErrLeaseLost, l.Token)
	}
	n, err := script.Exec(ctx, b.client, keys, append([]string{entry, token}, extra...)).AsInt64()
	if err != nil {
		return wrap(op+" task "+l.Task.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("redisbackend: %s task %s: %w", op, l.Task.ID, queue.ErrLeaseLost)
	}
	return nil
}

// keepRecord refreshes the expiry of a task's record to the retention
// period plus extra. A failure only shortens how long the record is kept,
// so it is logged, not returned.
func (b *Backend) keepRecord(ctx context.Context, id string, extra time.Duration) {
	ttl := b.cfg.Retention + max(extra, 0)
	c := b.client
	if err := c.Do(ctx, c.B().Pexpire().Key(b.taskKey(id)).Milliseconds(ttl.Milliseconds()).Build()).Error(); err != nil {
		b.log.Warn("flows: could not refresh the expiry of a task record", "task_id", id, "err", err)
	}
}

// Extend implements queue.Backend. The deadline Fetch goes by is kept in
// Redis, on the server's clock; l.Deadline follows it on the caller's.
func (b *Backend) Extend(ctx context.Context, l *queue.Lease, lease time.Duration) error {
	if lease <= 0 {
		lease = defaultLease
	}
	err := b.onLease(ctx, "extend lease of", extendScript, l, b.leaseKeys(), strconv.FormatInt(lease.Milliseconds(), 10))
	if err != nil {
		return err
	}
	l.Deadline = time.Now().Add(lease)
	b.keepRecord(ctx, l.Task.ID, 0)
	return nil
}

// Ack implements queue.Backend. The task record stays readable for the
// retention period.
func (b *Backend) Ack(ctx context.Context, l *queue.Lease) error {
	if err := b.onLease(ctx, "ack", ackScript, l, b.leaseKeys(), group); err != nil {
		return err
	}
	b.keepRecord(ctx, l.Task.ID, 0)
	return nil
}

// Retry implements queue.Backend: a task due at once goes to the end of
// the stream, behind the tasks ready before it; one due later waits in the
// delayed set, unless it has been cancelled: then, after the script, the
// record's flag is read and the task made ready (see Cancel for why this
// order leaves no cancelled task delayed).
func (b *Backend) Retry(ctx context.Context, l *queue.Lease, at time.Time) error {
	var id string
	if l != nil && l.Task != nil {
		id = l.Task.ID
	}
	err := b.onLease(ctx, "retry", retryScript, l,
		[]string{b.streamKey(), b.leasesKey(), b.holdersKey(), b.delayedKey()},
		group, id, strconv.FormatInt(at.UnixMilli(), 10), strconv.FormatInt(time.Now().UnixMilli(), 10))
	if err != nil {
		return err
	}
	if time.Until(at) > 0 {
		c := b.client
		flag, err := c.Do(ctx, c.B().Hget().Key(b.taskKey(id)).Field(recCancelled).Build()).ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return wrap("retry task "+id, err)
		}
		if flag == "1" {
			return b.makeReady(ctx, id)
		}
	}
	b.keepRecord(ctx, id, time.Until(at))
	return nil
}
