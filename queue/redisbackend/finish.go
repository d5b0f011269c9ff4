package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

var _ queue.Finisher = (*Backend)(nil)

// finishScript records the last events of tasks and acknowledges their
// leases, atomically: for each call, the events are appended as
// appendScript does and then, if they were recorded or the task had ended
// or is unknown, the lease is released as Ack does, when still held.
//
//	KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash, then, per
//	call: task hash, steps list, events stream
//	ARGV[1] retention in ms, ARGV[2] consumer group, ARGV[3] number of
//	calls, then, for each call: its lease's entry id and token, its
//	task's live channel, the number m of values that follow for the
//	call, and those values (see appendFunction)
//
// It returns, for each call, {append reply, 1 if the lease was released
// or 0}.
var finishScript = newLeaseScript(appendFunction + releaseLease + `
local calls = {}
local a = 4
for c = 1, tonumber(ARGV[3]) do
  calls[c] = a
  a = a + 4 + tonumber(ARGV[a + 3])
end
local entries = {}
for c = 1, #calls do entries[c] = ARGV[calls[c]] end
local holders = redis.call('HMGET', KEYS[3], unpack(entries))
local out, held = {}, {}
for c = 1, #calls do
  local a, k = calls[c], 3 * c
  local r = append(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 2], a + 4)
  local ended = type(r) ~= 'table' or string.find(r.err, '^NOTFOUND') or string.find(r.err, '^FINISHED')
  local acked = 0
  if ended and holders[c] == ARGV[a + 1] then
    held[#held + 1] = entries[c]
    acked = 1
  end
  out[c] = {r, acked}
end
release(KEYS[1], KEYS[2], KEYS[3], ARGV[2], held)
return out
`)

// finishCall is one AppendAndAck's share of finishScript.
type finishCall struct {
	taskID string
	// args are the call's ARGV values: entry id, token, then appendValues.
	args []string
}

// finishResult is what finishScript replied for one call.
type finishResult struct {
	last  string
	acked bool
}

// AppendAndAck implements queue.Finisher: one script records the events
// and acknowledges the lease, in one round trip that concurrent calls
// share (see batcher); the terminal event keeps the task's keys for the
// retention, so no other refresh is needed. On a Redis Cluster client, where one script cannot touch a task's keys
// and the queue's, it appends and then acknowledges, in two round trips.
func (b *Backend) AppendAndAck(ctx context.Context, l *queue.Lease, events ...progress.Event) (string, bool, error) {
	if l == nil || l.Task == nil {
		return "", false, fmt.Errorf("redisbackend: append and ack: %w: no lease", queue.ErrLeaseLost)
	}
	id := l.Task.ID
	entry, token, ok := parseToken(l.Token)
	if b.finishes == nil || !ok || !queue.ValidID(id) || len(events) == 0 {
		last, err := b.Append(ctx, id, events...)
		if err != nil && !errors.Is(err, progress.ErrFinished) && !errors.Is(err, progress.ErrNotFound) {
			return "", false, err
		}
		return last, b.Ack(ctx, l) == nil, err
	}
	args, err := b.appendValues(id, events, 2)
	if err != nil {
		return "", false, err
	}
	args[0], args[1] = entry, token
	res, err := b.finishes.do(ctx, finishCall{taskID: id, args: args})
	return res.last, res.acked, appendError(ctx, id, err)
}

// runFinishes runs a batch of AppendAndAck calls in one finishScript.
func (b *Backend) runFinishes(ctx context.Context, calls []*batchCall[finishCall, finishResult]) {
	keys := append(make([]string, 0, 3+3*len(calls)), b.leaseKeys()...)
	args := batchArgs([]string{strconv.FormatInt(b.retentionMS(), 10), group, strconv.Itoa(len(calls))},
		calls, func(c *batchCall[finishCall, finishResult]) []string { return c.item.args })
	for _, call := range calls {
		id := call.item.taskID
		keys = append(keys, b.taskKey(id), b.stepsKey(id), b.eventsKey(id))
	}
	reply, _ := b.runLeaseScript(ctx, finishScript, keys, args, nil)
	replies, err := batchReplies(reply, len(calls))
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
		acked, _ := pair[1].AsInt64()
		call.res.acked = acked == 1
	}
}
