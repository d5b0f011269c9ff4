package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// finishCall is one AppendAndAck's share of finishScript.
type finishCall struct {
	taskID string
	// args are the call's ARGV values: entry id, token, index score, flow
	// and task id (see lua/lib/index.lua), then appendValues.
	args []string
	// index is the state change the call writes into the task index, if
	// indexed.
	index   indexEntry
	indexed bool
}

// finishResult is what finishScript replied for one call.
type finishResult struct {
	last  string
	acked bool
}

// AppendAndAck records events as Append does and, if they were recorded
// or the task had ended or is unknown, acknowledges l as Ack does; acked
// reports whether l was acknowledged (false for a lease no longer held).
// A queue.Worker whose store is this Backend ends a successful task
// through it. One script records the events and acknowledges the lease,
// in one round trip that concurrent calls share (see batcher); the terminal event keeps the task's keys for the
// retention, so no other refresh is needed. On a Redis Cluster client, where one script cannot touch a task's keys
// and the queue's, it appends and then acknowledges, in two round trips.
//
// A call made again with the append key of one whose outcome was unknown
// (progress.ErrMaybeSent, see progress.WithAppendKey) records nothing if
// that one recorded the events, although they ended the task; it then
// acknowledges l if still held, and reports acked also when l's queue
// entry has no holder any more, as after that call acknowledged it (see
// lua/finish.lua).
func (b *Backend) AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (string, bool, error) {
	if l == nil || l.Task == nil {
		return "", false, fmt.Errorf("redisbackend: append and ack: %w: no lease", queue.ErrLeaseLost)
	}
	id := l.Task.ID
	entry, token, ok := parseToken(l.Token)
	if b.finishes == nil || !ok || !queue.ValidID(id) || len(events) == 0 {
		// Events that could never be recorded acknowledge nothing; after
		// this check, ErrFinished means that the task had ended.
		if err := terminalLast(id, events); err != nil {
			return "", false, err
		}
		last, err := b.AppendTask(ctx, l.Task, events...)
		if err != nil && !errors.Is(err, progress.ErrFinished) && !errors.Is(err, progress.ErrNotFound) {
			return "", false, err
		}
		return last, b.Ack(ctx, l) == nil, err
	}
	now := time.Now()
	key := progress.AppendKey(ctx)
	args, err := b.appendValues(id, key, events, 5, now)
	if err != nil {
		return "", false, err
	}
	call := finishCall{taskID: id, args: args}
	call.index, call.indexed = stateChange(id, l.Task.Flow, events, now)
	args[0], args[1], args[4] = entry, token, id
	args[2], args[3] = b.indexValues(call.index, call.indexed)
	res, err := b.finishes.do(ctx, call)
	return res.last, res.acked, maybeSent(key, appendError(ctx, id, err))
}

// runFinishes runs a batch of AppendAndAck calls in one finishScript.
func (b *Backend) runFinishes(ctx context.Context, calls []*batchCall[finishCall, finishResult]) {
	keys := append(make([]string, 0, 2+3*len(calls)), b.leaseKeys()...)
	var index []indexEntry
	for _, call := range calls {
		if call.item.indexed {
			index = append(index, call.item.index)
		}
	}
	// The script writes the index (see index.go): it runs on a single
	// Redis only. Pruning follows it.
	indexArgs, named, prune := b.scriptIndex(index)
	args := batchArgs(append([]string{strconv.FormatInt(b.retentionMS(), 10), group, strconv.Itoa(len(calls))}, indexArgs...),
		calls, func(c *batchCall[finishCall, finishResult]) []string { return c.item.args })
	for _, call := range calls {
		id := call.item.taskID
		keys = append(keys, b.taskKey(id), b.stepsKey(id), b.eventsKey(id))
	}
	reply, indexed := b.runLeaseScript(ctx, finishScript, keys, args, prune)
	b.indexErrors(indexed)
	replies, err := batchReplies(reply, len(calls))
	var written []indexEntry
	for i, call := range calls {
		id := call.item.taskID
		if err != nil {
			call.err = b.wrap(ctx, "append to task "+id, err)
			continue
		}
		pair, perr := replies[i].ToArray()
		if perr != nil || len(pair) != 2 {
			call.err = fmt.Errorf("redisbackend: append to task %q: malformed reply: %v", id, perr)
			continue
		}
		call.res.last, call.err = appendReply(pair[0], id)
		if call.err == nil && call.item.indexed {
			written = append(written, call.item.index)
		}
		acked, _ := pair[1].AsInt64()
		call.res.acked = acked == 1
	}
	b.noteNamed(named, written)
}
