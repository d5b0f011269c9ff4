package redisbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Snapshot hash fields.
const (
	fieldState    = "state"
	fieldStatus   = "status"
	fieldProgress = "progress"
	fieldResult   = "result"
	fieldLast     = "last"
)

// eventField is the field of an event stream entry that holds the event's
// JSON.
const eventField = "e"

// pageSize is how many events one XRANGE reads.
const pageSize = 500

// luaClock defines clock, the Redis server's clock in Unix ms, which the
// scripts that set expiry times and lease deadlines go by.
const luaClock = `
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
`

// createScript records a new task in state PENDING with no events.
//
//	KEYS[1] snapshot hash
//	ARGV[1] retention in ms, ARGV[2] initial state, ARGV[3] initial status
//
// It fails with "EXISTS" when the snapshot exists. An expired namesake
// leaves no steps or events behind: the three progress keys of a task
// always share one expiry time (the snapshot's field exp, see
// appendFunction), so they expire together, and an expired key reads as
// missing even before Redis deletes it.
var createScript = rueidis.NewLuaScript(luaClock + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('EXISTS task already exists')
end
local exp = string.format('%d', clock + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'progress', '0', 'last', '', 'exp', exp)
redis.call('PEXPIREAT', KEYS[1], exp)
return 1
`)

// Create implements progress.Store in one round trip.
func (b *Backend) Create(ctx context.Context, taskID string) error {
	if !queue.ValidID(taskID) {
		return fmt.Errorf("redisbackend: create task %q: %w", taskID, queue.ErrInvalidID)
	}
	init := progress.NewSnapshot()
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	err := createScript.Exec(ctx, b.client,
		[]string{b.snapKey(taskID)},
		[]string{strconv.FormatInt(b.retentionMS(), 10), string(init.State), init.Details.Status},
	).Error()
	if replyCode(err) == "EXISTS" {
		return fmt.Errorf("%w: %q", progress.ErrExists, taskID)
	}
	return b.wrap(ctx, "create task "+taskID, err)
}

// appendScript records the events of one or more Append calls, each all
// or nothing, in order; calls of several tasks go together when Appends
// are batched (see batcher).
//
//	KEYS, per call: snapshot hash, steps list, events stream
//	ARGV[1] retention in ms, ARGV[2] number of calls
//	then, for each call: its task's live channel, the number m of values
//	that follow for the call, and those values (see appendFunction)
//
// It returns one reply per call: a "NOTFOUND" error when the task does not
// exist and a "FINISHED" error when it has reached SUCCESS or FAILURE
// (then nothing of that call is recorded); otherwise it adds each event to
// the stream (Redis assigns the id), folds the call's events into the
// snapshot, publishes them all in one live message (see liveMessage),
// refreshes the expiry of the three keys and replies with the id of the
// last event.
var appendScript = rueidis.NewLuaScript(appendFunction + `
local out = {}
local a = 3
for c = 0, tonumber(ARGV[2]) - 1 do
  out[c + 1] = append(KEYS[3 * c + 1], KEYS[3 * c + 2], KEYS[3 * c + 3], ARGV[a], a + 2)
  a = a + 2 + tonumber(ARGV[a + 1])
end
return out
`)

// appendFunction defines the Lua function append(snap, stepsKey, events,
// channel, a), which records one call's events, whose values start at
// ARGV[a], with the retention in ms at ARGV[1], and returns its reply. The
// values are those of appendValues: the number of events n, each event's
// JSON, the state to set when the task is PENDING and when it is not (""
// for no change), the number of snapshot field-value values k and those
// values, the number of step results s and their JSON. Go folds the
// events into these (see foldEvents), so that the script only stores
// them.
//
// The three keys of a task share one expiry time, kept in the snapshot's
// field exp (Unix ms, Redis's clock). An Append moves it to the retention
// from now when the task reaches its terminal state or when less than
// seven eighths of the retention is left; otherwise it only gives a key
// this call creates (the events stream, the steps list) the same time. So
// a task streaming many events refreshes its expiry once in a while
// rather than three times per Append, and its keys still live at least
// seven eighths of the retention after its last write, and the whole
// retention after its end.
const appendFunction = luaClock + `
local retention = tonumber(ARGV[1])
local function append(snap, stepsKey, events, channel, a)
  local cur = redis.call('HMGET', snap, 'state', 'last', 'exp')
  local state = cur[1]
  if not state then
    return redis.error_reply('NOTFOUND task not found')
  end
  if state == 'SUCCESS' or state == 'FAILURE' then
    return redis.error_reply('FINISHED task already finished')
  end
  local prev = cur[2] or ''
  local created = prev == ''
  local live = {prev}
  local n = tonumber(ARGV[a])
  for i = a + 1, a + n do
    local id = redis.call('XADD', events, '*', 'e', ARGV[i])
    live[#live + 1] = id .. ' ' .. ARGV[i]
    prev = id
  end
  a = a + n + 1
  local to = ARGV[a + 1]
  if state == 'PENDING' then to = ARGV[a] end
  if to ~= '' then state = to end
  redis.call('PUBLISH', channel, table.concat(live, '\n'))
  local exp = tonumber(cur[3])
  local refresh = state == 'SUCCESS' or state == 'FAILURE' or not exp or exp - clock < retention * 7 / 8
  if refresh then exp = clock + retention end
  exp = string.format('%d', exp)
  local k = tonumber(ARGV[a + 2])
  local set = {'state', state, 'last', prev, 'exp', exp}
  for i = a + 3, a + 2 + k do
    set[#set + 1] = ARGV[i]
  end
  redis.call('HSET', snap, unpack(set))
  a = a + 3 + k
  local s = tonumber(ARGV[a])
  if s > 0 then
    redis.call('RPUSH', stepsKey, unpack(ARGV, a + 1, a + s))
  end
  if refresh then
    redis.call('PEXPIREAT', snap, exp)
  end
  if refresh or s > 0 then
    redis.call('PEXPIREAT', stepsKey, exp)
  end
  if refresh or created then
    redis.call('PEXPIREAT', events, exp)
  end
  return prev
end
`

// appendCall is one Append call's share of appendScript: its task and
// ARGV values (the live channel, the number of events, the events').
type appendCall struct {
	taskID string
	args   []string
}

// Append implements progress.Store in one round trip, which concurrent
// Appends (of any tasks) share (see batcher). Events are checked before
// anything is sent: an invalid event gives progress.ErrInvalidEvent and an
// event after a terminal one in the same call progress.ErrFinished.
func (b *Backend) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	if !queue.ValidID(taskID) {
		return "", fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	if len(events) == 0 {
		_, last, err := b.Snapshot(ctx, taskID)
		return last, err
	}
	args, err := b.appendValues(taskID, events, 0)
	if err != nil {
		return "", err
	}
	last, err := b.appends.do(ctx, appendCall{taskID: taskID, args: args})
	return last, appendError(ctx, taskID, err)
}

// appendValues checks events and returns the ARGV values of one call of
// appendScript (the live channel, the number of values that follow, and
// those of appendFunction), after room for lead values the caller puts
// first. An invalid event gives progress.ErrInvalidEvent and an event
// after a terminal one progress.ErrFinished.
func (b *Backend) appendValues(taskID string, events []progress.Event, lead int) ([]string, error) {
	for i, e := range events[:len(events)-1] {
		if e.Terminal() {
			return nil, fmt.Errorf("%w: task %q: event %d follows a terminal event", progress.ErrFinished, taskID, i+1)
		}
	}
	args := make([]string, lead, lead+8+2*len(events))
	args = append(args, b.liveChannel(taskID), "", strconv.Itoa(len(events)))
	steps := make([]string, 0, len(events))
	for i, e := range events {
		data, step, err := encodeEvent(e)
		if err != nil {
			return nil, fmt.Errorf("redisbackend: append to task %q: event %d: %w", taskID, i, err)
		}
		args = append(args, data)
		if step != "" {
			steps = append(steps, step)
		}
	}
	f := foldEvents(events)
	args = append(args, string(f.ifPending), string(f.otherwise), strconv.Itoa(len(f.set)))
	args = append(args, f.set...)
	args = append(args, strconv.Itoa(len(steps)))
	args = append(args, steps...)
	args[lead+1] = strconv.Itoa(len(args) - lead - 2)
	return args, nil
}

// fold is what a call's events change in a task's snapshot hash.
type fold struct {
	// ifPending and otherwise are the state to record when the task is
	// PENDING and when it is not ("" for no change).
	ifPending, otherwise progress.State
	// set are the other fields to write, as field-value values.
	set []string
}

// foldEvents folds events as progress.Snapshot.Apply does, for a task in
// either non-terminal state; the step results are added by the caller.
func foldEvents(events []progress.Event) fold {
	state := func(initial progress.State) progress.State {
		s := progress.Snapshot{State: initial}
		for _, e := range events {
			s.Apply(e)
		}
		return s.State
	}
	var f fold
	if s := state(progress.StatePending); s != progress.StatePending {
		f.ifPending = s
	}
	if s := state(progress.StateProgress); s != progress.StateProgress {
		f.otherwise = s
	}
	var status, pct, result *string
	for _, e := range events {
		switch e.Type {
		case progress.EventState:
			if e.Status != "" {
				status = &e.Status
			}
			if e.State == progress.StateSuccess {
				p, r := "100", string(e.Result)
				pct, result = &p, &r
			}
		case progress.EventStatus:
			status = &e.Status
		case progress.EventProgress:
			p := strconv.Itoa(min(max(e.Progress, 0), 100))
			pct = &p
			if e.Status != "" {
				status = &e.Status
			}
		}
	}
	for _, kv := range []struct {
		field string
		value *string
	}{{fieldStatus, status}, {fieldProgress, pct}, {fieldResult, result}} {
		if kv.value != nil {
			f.set = append(f.set, kv.field, *kv.value)
		}
	}
	return f
}

// appendError turns the error of an append to taskID, run under the
// caller's ctx, into what Append returns.
func appendError(ctx context.Context, taskID string, err error) error {
	switch replyCode(err) {
	case "NOTFOUND":
		return fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	case "FINISHED":
		return fmt.Errorf("%w: task %q: nothing recorded", progress.ErrFinished, taskID)
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("redisbackend: append to task %q: %w", taskID, err)
	}
	return err
}

// runAppends runs a batch of Append calls in one appendScript.
func (b *Backend) runAppends(ctx context.Context, calls []*batchCall[appendCall, string]) {
	keys := make([]string, 0, 3*len(calls))
	args := []string{strconv.FormatInt(b.retentionMS(), 10), strconv.Itoa(len(calls))}
	for _, c := range calls {
		id := c.item.taskID
		keys = append(keys, b.snapKey(id), b.stepsKey(id), b.eventsKey(id))
		args = append(args, c.item.args...)
	}
	replies, err := batchReplies(appendScript.Exec(ctx, b.client, keys, args), len(calls))
	for i, c := range calls {
		if err != nil {
			c.err = b.wrap(ctx, "append to task "+c.item.taskID, err)
			continue
		}
		c.res, c.err = appendReply(replies[i], c.item.taskID)
	}
}

// appendReply returns the id of the last event that appendFunction
// replied for one call to taskID, or its error: a coded reply (NOTFOUND,
// FINISHED) as it is, for appendError, anything else wrapped.
func appendReply(m rueidis.RedisMessage, taskID string) (string, error) {
	last, err := m.ToString()
	if err != nil && replyCode(err) == "" {
		err = fmt.Errorf("redisbackend: append to task %q: %w", taskID, err)
	}
	return last, err
}

// encodeEvent validates e and returns its JSON and, for a step event, the
// step result's JSON.
func encodeEvent(e progress.Event) (data, step string, err error) {
	if err := e.Validate(); err != nil {
		return "", "", err
	}
	if e.Result != nil && !json.Valid(e.Result) {
		return "", "", fmt.Errorf("%w: result is not JSON", progress.ErrInvalidEvent)
	}
	var stepJSON []byte
	if e.Step != nil {
		if e.Step.Data != nil && !json.Valid(e.Step.Data) {
			return "", "", fmt.Errorf("%w: step data is not JSON", progress.ErrInvalidEvent)
		}
		if stepJSON, err = appendStepJSON(nil, e.Step); err != nil {
			return "", "", fmt.Errorf("%w: %w", progress.ErrInvalidEvent, err)
		}
	}
	buf, err := appendEventJSON(make([]byte, 0, 64+len(stepJSON)), e, stepJSON)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", progress.ErrInvalidEvent, err)
	}
	return string(buf), string(stepJSON), nil
}

// Snapshot implements progress.Store in one round trip: the hash and the
// steps are read in one MULTI/EXEC, so they agree with each other.
func (b *Backend) Snapshot(ctx context.Context, taskID string) (progress.Snapshot, string, error) {
	if !queue.ValidID(taskID) {
		return progress.Snapshot{}, "", fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	res := c.DoMulti(ctx,
		c.B().Multi().Build(),
		c.B().Hgetall().Key(b.snapKey(taskID)).Build(),
		c.B().Lrange().Key(b.stepsKey(taskID)).Start(0).Stop(-1).Build(),
		c.B().Exec().Build(),
	)
	for _, r := range res {
		if err := r.Error(); err != nil {
			return progress.Snapshot{}, "", b.wrap(ctx, "read snapshot of task "+taskID, err)
		}
	}
	parts, err := res[3].ToArray()
	if err != nil || len(parts) != 2 {
		return progress.Snapshot{}, "", fmt.Errorf("redisbackend: read snapshot of task %q: unexpected reply: %v", taskID, err)
	}
	fields, err := parts[0].AsStrMap()
	if err != nil {
		return progress.Snapshot{}, "", b.wrap(ctx, "read snapshot of task "+taskID, err)
	}
	if len(fields) == 0 {
		return progress.Snapshot{}, "", fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}
	steps, err := parts[1].AsStrSlice()
	if err != nil {
		return progress.Snapshot{}, "", b.wrap(ctx, "read steps of task "+taskID, err)
	}
	snap, err := decodeSnapshot(fields, steps)
	if err != nil {
		return progress.Snapshot{}, "", fmt.Errorf("redisbackend: decode snapshot of task %q: %w", taskID, err)
	}
	return snap, fields[fieldLast], nil
}

func decodeSnapshot(fields map[string]string, steps []string) (progress.Snapshot, error) {
	snap := progress.Snapshot{
		State: progress.State(fields[fieldState]),
		Details: progress.Details{
			Status:      fields[fieldStatus],
			StepResults: make([]progress.StepResult, len(steps)),
		},
	}
	if p := fields[fieldProgress]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return snap, fmt.Errorf("progress %q: %w", p, err)
		}
		snap.Details.Progress = n
	}
	if r := fields[fieldResult]; r != "" {
		snap.Details.FinalResult = json.RawMessage(r)
	}
	for i, s := range steps {
		if err := json.Unmarshal([]byte(s), &snap.Details.StepResults[i]); err != nil {
			return snap, fmt.Errorf("step %d: %w", i, err)
		}
	}
	return snap, nil
}

// Events implements progress.Store, reading the stream in pages of
// pageSize entries.
func (b *Backend) Events(ctx context.Context, taskID, afterID string) ([]progress.Event, error) {
	after, err := parseEventID(afterID)
	if err != nil {
		return nil, err
	}
	if !queue.ValidID(taskID) {
		return nil, fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	var all []progress.Event
	for {
		page, _, err := b.readPage(ctx, taskID, after, pageSize)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < pageSize {
			return all, nil
		}
		after, _ = parseEventID(page[len(page)-1].ID)
	}
}

// readPage reads up to count events of the task after the given id, and
// whether the task had reached a terminal state when the read began (then
// every event of the task is in the stream, so reading on to the end
// yields them all). It fails with progress.ErrNotFound when the task does
// not exist.
func (b *Backend) readPage(ctx context.Context, taskID string, after eventID, count int64) ([]progress.Event, bool, error) {
	if after.isMax() {
		return nil, false, nil
	}
	start := "-"
	if !after.isZero() {
		start = "(" + after.String()
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	// HGET runs first: if it sees a terminal state, the XRANGE after it
	// sees the terminal event.
	res := c.DoMulti(ctx,
		c.B().Hget().Key(b.snapKey(taskID)).Field(fieldState).Build(),
		c.B().Xrange().Key(b.eventsKey(taskID)).Start(start).End("+").Count(count).Build(),
	)
	state, err := res[0].ToString()
	if rueidis.IsRedisNil(err) {
		return nil, false, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}
	if err != nil {
		return nil, false, b.wrap(ctx, "read events of task "+taskID, err)
	}
	entries, err := res[1].AsXRange()
	if err != nil {
		return nil, false, b.wrap(ctx, "read events of task "+taskID, err)
	}
	events := make([]progress.Event, 0, len(entries))
	for _, en := range entries {
		var e progress.Event
		if err := json.Unmarshal([]byte(en.FieldValues[eventField]), &e); err != nil {
			return nil, false, fmt.Errorf("redisbackend: decode event %s of task %q: %w", en.ID, taskID, err)
		}
		e.ID = en.ID
		events = append(events, e)
	}
	return events, progress.State(state).Terminal(), nil
}

// errTaskGone reports whether err means that a task does not exist.
func errTaskGone(err error) bool { return errors.Is(err, progress.ErrNotFound) }
