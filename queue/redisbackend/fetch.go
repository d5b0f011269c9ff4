package redisbackend

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

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
// (see fetchScript), increments the attempt of each task taken and reads
// its record: one round trip (two on a Cluster client, see lease). It
// leases at most maxBatch tasks per call, whatever max asks, so that one
// script does not hold Redis for long; a worker with more free slots
// fetches again at once. With nothing to take, Fetch waits (a blocking
// XREAD, which changes nothing, so cancelling it loses nothing)
// until an entry is added to the stream, the next delayed task is due (to
// the millisecond), the next lease passes, ctx ends, or a second goes by,
// and then looks again. A task delayed to less than a second from now
// (Enqueue with a close RunAt, Retry with a short backoff) also adds an
// entry to the queue's wake stream, which the same XREAD watches: the
// waiting fetchers look again and learn the new due time.
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
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		taken, wait, lastIDs, err := b.take(ctx, worker, max, lease)
		if err != nil {
			return nil, nil, err
		}
		if len(taken) > 0 {
			leases, states, err := b.lease(ctx, taken, lease)
			if len(leases) > 0 || err != nil {
				return leases, states, err
			}
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if wait > 0 {
			if err := b.waitForEntries(ctx, lastIDs, wait); err != nil {
				return nil, nil, err
			}
		}
	}
}

// takenEntry is an entry fetchScript leased.
type takenEntry struct {
	entry, taskID, token string
	// read is set when the script read the task's record, into rec.
	read bool
	rec  record
}

// The fetch script finds a record's rec and attempt at these places of
// recordFieldNames (Lua counts from 1).
const _ = uint(iRec-0) + uint(0-iRec) + uint(iAttempt-1) + uint(1-iAttempt)

// take runs fetchScript and returns what it leased, how long to wait
// before looking again if nothing, and the last ids of the stream and the
// wake stream. Unless the client is a Cluster client, the script also
// reads the records of the tasks it leases (see lease).
func (b *Backend) take(ctx context.Context, worker string, max int, lease time.Duration) ([]takenEntry, time.Duration, [2]string, error) {
	var lastIDs [2]string
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	args := make([]string, 0, 8+len(recordFieldNames))
	args = append(args, group, worker, strconv.Itoa(max), strconv.FormatInt(lease.Milliseconds(), 10),
		strconv.FormatInt(time.Now().UnixMilli(), 10), strconv.Itoa(promoteBatch))
	if b.cluster {
		args = append(args, "", "0")
	} else {
		args = append(args, b.cfg.Prefix, strconv.FormatInt(b.retentionMS(), 10))
		args = append(args, recordFieldNames[:]...)
	}
	res, err := fetchScript.exec(ctx, b.client,
		[]string{b.streamKey(), b.delayedKey(), b.leasesKey(), b.holdersKey(), b.seqKey(), b.wakeKey()},
		args,
	).ToArray()
	if err != nil {
		return nil, 0, lastIDs, b.wrap(ctx, "fetch tasks", err)
	}
	if len(res) != 5 {
		return nil, 0, lastIDs, fmt.Errorf("redisbackend: fetch tasks: unexpected reply of %d values", len(res))
	}
	items, err := res[0].ToArray()
	if err != nil {
		return nil, 0, lastIDs, fmt.Errorf("redisbackend: fetch tasks: %w", err)
	}
	taken := make([]takenEntry, len(items))
	for i, item := range items {
		parts, err := item.ToArray()
		if err != nil || len(parts) < 3 {
			return nil, 0, lastIDs, fmt.Errorf("redisbackend: fetch tasks: malformed entry: %v", err)
		}
		e := &taken[i]
		e.entry, _ = parts[0].ToString()
		e.token, _ = parts[2].ToString()
		fields, _ := parts[1].AsStrSlice()
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == streamField {
				e.taskID = fields[i+1]
			}
		}
		if len(parts) > 3 {
			if err := hmgetValues(parts[3], e.rec[:]); err != nil {
				return nil, 0, lastIDs, fmt.Errorf("redisbackend: fetch tasks: malformed record: %w", err)
			}
			e.read = true
		}
	}
	wait := maxBlock
	for _, r := range res[1:3] {
		if ms, err := r.AsInt64(); err == nil && ms >= 0 {
			wait = min(wait, time.Duration(ms)*time.Millisecond)
		}
	}
	lastIDs[0], _ = res[3].ToString()
	lastIDs[1], _ = res[4].ToString()
	return taken, wait, lastIDs, nil
}

// waitForEntries blocks until an entry is added to the stream or the wake
// stream after lastIDs, wait passes or ctx ends (then it returns
// ctx.Err()).
func (b *Backend) waitForEntries(parent context.Context, lastIDs [2]string, wait time.Duration) error {
	ms := max(int64((wait+time.Millisecond-1)/time.Millisecond), 1)
	ctx, cancel := b.bound(parent, time.Duration(ms)*time.Millisecond)
	defer cancel()
	c := b.client
	err := c.Do(ctx, c.B().Xread().Count(1).Block(ms).Streams().
		Key(b.streamKey(), b.wakeKey()).Id(lastIDs[0], lastIDs[1]).Build()).Error()
	if err != nil && !rueidis.IsRedisNil(err) {
		if ctxErr := parent.Err(); ctxErr != nil {
			return ctxErr
		}
		return b.wrap(ctx, "wait for tasks", err)
	}
	return nil
}

// lease turns entries taken by fetchScript into leases. Unless the
// script has read them already, each task's attempt is incremented and
// its record read, with its progress state (see FetchWithState), and kept
// for the retention period, in one pipelined round trip. An entry whose
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
		cmds = append(cmds,
			c.B().Hincrby().Key(key).Field(recAttempt).Increment(1).Build(),
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
			var err error
			fields, err = readRecord(res[1])
			res = res[3:]
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
				// a progress snapshot is the store's).
				_ = c.Do(ctx, c.B().Del().Key(b.taskKey(e.taskID)).Build()).Error()
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
