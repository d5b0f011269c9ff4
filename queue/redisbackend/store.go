package redisbackend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Snapshot fields of the task hash (the queue record's are in task.go).
const (
	fieldState    = "state"
	fieldStatus   = "status"
	fieldProgress = "progress"
	fieldResult   = "result"
	fieldLast     = "last"
	// fieldEventBytes is the bytes of the task's events list (see
	// lua/lib/append.lua), by which its readers size their pages.
	fieldEventBytes = "ebytes"
	// The snapshot's times, in Unix ms by the Redis server's clock (see
	// lua/lib/append.lua).
	fieldUpdated = "updated"
	fieldStarted = "started"
	fieldEnded   = "ended"
)

// snapshotFields are the fields Snapshot reads, in the order of a
// snapshotValues.
var snapshotFields = [...]string{fieldState, fieldStatus, fieldProgress, fieldResult, fieldLast, fieldUpdated, fieldStarted, fieldEnded}

// Indexes of the snapshot fields in snapshotFields and snapshotValues.
const (
	sState = iota
	sStatus
	sProgress
	sResult
	sLast
	sUpdated
	sStarted
	sEnded
)

// snapshotValues is a snapshot as read: the value of each field of
// snapshotFields, "" for one that is missing (a task has no empty state).
type snapshotValues [len(snapshotFields)]string

// Create implements progress.Store in one round trip.
func (b *Backend) Create(ctx context.Context, taskID string) error {
	if !queue.ValidID(taskID) {
		return fmt.Errorf("redisbackend: create task %q: %w", taskID, queue.ErrInvalidID)
	}
	init := progress.NewSnapshot()
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	err := createScript.exec(ctx, b.client,
		[]string{b.taskKey(taskID)},
		[]string{strconv.FormatInt(b.keepMS(b.cfg.Retention), 10), string(init.State), init.Details.Status},
	).Error()
	if replyCode(err) == "EXISTS" {
		return fmt.Errorf("%w: %q", progress.ErrExists, taskID)
	}
	return b.wrap(ctx, "create task "+taskID, err)
}

// appendCall is one Append call's share of appendScript: its task and
// ARGV values (the index score, flow and task id of lua/lib/index.lua,
// the live channel, the number of values that follow, and those of
// lua/lib/append.lua), and the state change it writes into the task
// index, if any.
type appendCall struct {
	taskID  string
	args    []string
	index   indexEntry
	indexed bool
	// ends is set when the events end the task (the last is terminal):
	// in durable mode its batch is followed by WAIT.
	ends bool
}

// Append implements progress.Store in one round trip, which concurrent
// Appends (of any tasks) share (see batcher). Events are checked before
// anything is sent: an invalid event gives progress.ErrInvalidEvent and an
// event after a terminal one in the same call progress.ErrFinished.
//
// Append honours append keys (see progress.WithAppendKey): the key is
// kept in the task hash (field akey), read and written by the script's
// commands for the call, so that a keyed call costs nothing more, and a
// keyed call whose outcome is unknown (Redis not answering in time, the
// connection cut once it was sent) fails with an error that wraps
// progress.ErrMaybeSent as well as queue.ErrUnavailable.
//
// Events that change the task's state also write it into the queue's task
// index, in the same round trip; Append does not know the task's flow, so
// the flow's index is only repaired by the next listing that meets the
// task (AppendTask, which a queue.Worker and a queue.Broker whose store is
// this Backend call, writes both).
func (b *Backend) Append(ctx context.Context, taskID string, events ...progress.Event) (string, error) {
	return b.appendTask(ctx, taskID, "", events)
}

// AppendTask is Append for a task whose record the caller holds: the
// state change its events make, if any, is written into the index of the
// task's flow too.
func (b *Backend) AppendTask(ctx context.Context, t *queue.Task, events ...progress.Event) (string, error) {
	if t == nil {
		return "", fmt.Errorf("redisbackend: append: %w", queue.ErrInvalidID)
	}
	return b.appendTask(ctx, t.ID, t.Flow, events)
}

// appendTask appends events to task taskID of flow ("" when unknown).
func (b *Backend) appendTask(ctx context.Context, taskID, flow string, events []progress.Event) (string, error) {
	if !queue.ValidID(taskID) {
		return "", fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	if len(events) == 0 {
		_, last, err := b.Snapshot(ctx, taskID)
		return last, err
	}
	now := time.Now()
	key := progress.AppendKey(ctx)
	args, err := b.appendValues(taskID, key, events, 3, now)
	if err != nil {
		return "", err
	}
	call := appendCall{taskID: taskID, args: args, ends: events[len(events)-1].Terminal()}
	call.index, call.indexed = stateChange(taskID, flow, events, now)
	args[0], args[1] = b.indexValues(call.index, call.indexed)
	args[2] = taskID
	last, err := b.appends.do(ctx, call)
	return last, maybeSent(key, appendError(ctx, taskID, err))
}

// maybeSent adds progress.ErrMaybeSent to err, the error of an append
// with append key key ("" for none), when the append may have run: Redis
// could not be reached in time, the connection broke once it was sent,
// or ctx ended while it was under way. The script records a keyed call
// once (see lua/lib/append.lua), so it may then be sent again with the
// same key. An append that was certainly not sent (progress.ErrNotSent)
// or that Redis answered is left as it is.
func maybeSent(key string, err error) error {
	if key == "" || err == nil || errors.Is(err, progress.ErrNotSent) {
		return err
	}
	if errors.Is(err, queue.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", progress.ErrMaybeSent, err)
	}
	return err
}

// appendValues checks events and returns the ARGV values of one call of
// appendScript (the live channel, the number of values that follow, and
// those of lua/lib/append.lua, the first the append key key, "" for
// none), after room for lead values the caller puts first. An invalid
// event gives progress.ErrInvalidEvent and an event after a terminal one
// progress.ErrFinished.
func (b *Backend) appendValues(taskID, key string, events []progress.Event, lead int, now time.Time) ([]string, error) {
	if err := terminalLast(taskID, events); err != nil {
		return nil, err
	}
	args := make([]string, lead, lead+16)
	// The events' time is the call's, to the millisecond, as the
	// snapshot's and the task index's (see lua/lib/append.lua).
	at := time.UnixMilli(now.UnixMilli()).UTC()
	blob := make([]byte, 0, 64*len(events))
	var steps []string
	for i, e := range events {
		if i > 0 {
			blob = append(blob, '\n')
		}
		var step string
		var err error
		if blob, step, err = appendEncodedEvent(blob, e, at); err != nil {
			return nil, fmt.Errorf("redisbackend: append to task %q: event %d: %w", taskID, i, err)
		}
		if step != "" {
			steps = append(steps, step)
		}
	}
	element := string(blob)
	args = append(args, b.liveChannel(taskID), "", key, strconv.Itoa(len(events)), element, elementTag(element))
	f := foldEvents(events)
	starts := ""
	if f.starts {
		starts = "1"
	}
	args = append(args, string(f.ifPending), string(f.otherwise), starts, strconv.FormatInt(now.UnixMilli(), 10), "")
	k := len(args)
	args = f.appendSet(args)
	args[k-1] = strconv.Itoa(len(args) - k)
	args = append(args, strconv.Itoa(len(steps)))
	args = append(args, steps...)
	args[lead+1] = strconv.Itoa(len(args) - lead - 2)
	return args, nil
}

// terminalLast returns an error wrapping progress.ErrFinished if an
// event other than the last of events is terminal: then none of them can
// be recorded.
func terminalLast(taskID string, events []progress.Event) error {
	for i := range max(len(events)-1, 0) {
		if events[i].Terminal() {
			return fmt.Errorf("%w: task %q: event %d follows a terminal event", progress.ErrFinished, taskID, i+1)
		}
	}
	return nil
}

// fold is what a call's events change in a task's hash.
type fold struct {
	// ifPending and otherwise are the state to record when the task is
	// PENDING and when it is not ("" for no change).
	ifPending, otherwise progress.State
	// starts is set when the events start a run: one of them is a state
	// event to PROGRESS.
	starts bool
	// The other fields, when the events set them.
	status, progress, result foldValue
}

// foldValue is the last value a fold gives a field, if it gives one.
type foldValue struct {
	s   string
	set bool
}

// appendSet appends the fields f sets and their values to args.
func (f *fold) appendSet(args []string) []string {
	for _, kv := range [...]struct {
		field string
		foldValue
	}{{fieldStatus, f.status}, {fieldProgress, f.progress}, {fieldResult, f.result}} {
		if kv.set {
			args = append(args, kv.field, kv.s)
		}
	}
	return args
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
	var status, pct, result foldValue
	for i := range events {
		e := &events[i]
		switch e.Type {
		case progress.EventState:
			f.starts = f.starts || e.State == progress.StateProgress
			if e.Status != "" {
				status = foldValue{e.Status, true}
			}
			if e.State == progress.StateSuccess {
				pct, result = foldValue{"100", true}, foldValue{string(e.Result), true}
			}
		case progress.EventStatus:
			status = foldValue{e.Status, true}
		case progress.EventProgress:
			pct = foldValue{strconv.Itoa(min(max(e.Progress, 0), 100)), true}
			if e.Status != "" {
				status = foldValue{e.Status, true}
			}
		}
	}
	f.status, f.progress, f.result = status, pct, result
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
	for _, c := range calls {
		id := c.item.taskID
		keys = append(keys, b.taskKey(id), b.stepsKey(id), b.eventsKey(id))
	}
	var index []indexEntry
	for _, c := range calls {
		if c.item.indexed {
			index = append(index, c.item.index)
		}
	}
	// On a single Redis the script writes the index, and pruning follows
	// it; on a Cluster client the index commands do (see index.go).
	indexArgs, named, after := b.scriptIndex(index)
	if !b.inScript() {
		after = b.indexCommands(index)
	}
	args := batchArgs(append([]string{strconv.FormatInt(b.retentionMS(), 10), strconv.Itoa(len(calls))}, indexArgs...),
		calls, func(c *batchCall[appendCall, string]) []string { return c.item.args })
	// In durable mode a batch that ends a task waits for the replicas as
	// the end of a lease does: a worker with finish hooks records the end
	// this way, then runs its hooks, and only then acknowledges the task.
	wait := waitNever
	if b.durable() && slices.ContainsFunc(calls, func(c *batchCall[appendCall, string]) bool { return c.item.ends }) {
		wait = waitEnds
	}
	var reply rueidis.RedisResult
	if len(after) == 0 && wait == waitNever {
		reply = appendScript.exec(ctx, b.client, keys, args)
	} else {
		var indexed []rueidis.RedisResult
		reply, indexed = b.runScript(ctx, appendScript, wait, keys, args, after)
		b.indexErrors(indexed)
	}
	replies, err := batchReplies(reply, len(calls))
	var written []indexEntry
	for i, c := range calls {
		if err != nil {
			c.err = b.wrap(ctx, "append to task "+c.item.taskID, err)
			continue
		}
		c.res, c.err = appendReply(replies[i], c.item.taskID)
		if c.err == nil && c.item.indexed {
			written = append(written, c.item.index)
		}
	}
	b.noteNamed(named, written)
}

// appendReply returns the id of the last event that lua/lib/append.lua
// replied for one call to taskID, or its error: a coded reply (NOTFOUND,
// FINISHED) as it is, for appendError, anything else wrapped.
func appendReply(m rueidis.RedisMessage, taskID string) (string, error) {
	last, err := m.ToString()
	if err != nil && replyCode(err) == "" {
		err = fmt.Errorf("redisbackend: append to task %q: %w", taskID, err)
	}
	return last, err
}

// appendEncodedEvent validates e and appends its JSON to buf; for a step
// event it also returns the step result's JSON. The JSON has no line
// break, which eventBatch relies on: json.Marshal, whose output
// appendEventJSON reproduces, escapes them in strings and compacts raw
// JSON.
//
// The event and its step are recorded at the time at, which their JSON
// carries: whatever At the caller gave them is replaced, as their id is.
func appendEncodedEvent(buf []byte, e progress.Event, at time.Time) (_ []byte, step string, err error) {
	if err := e.Validate(); err != nil {
		return buf, "", err
	}
	e.At = at
	var stepJSON []byte
	if e.Step != nil {
		st := *e.Step
		st.At = time.Time{} // the event has it
		if stepJSON, err = appendStepJSON(nil, &st); err != nil {
			return buf, "", fmt.Errorf("%w: %w", progress.ErrInvalidEvent, err)
		}
	}
	start := len(buf)
	if buf, err = appendEventJSON(buf, e, stepJSON); err != nil {
		return buf[:start], "", fmt.Errorf("%w: %w", progress.ErrInvalidEvent, err)
	}
	if bytes.IndexByte(buf[start:], '\n') >= 0 {
		return buf[:start], "", fmt.Errorf("%w: its JSON has a line break", progress.ErrInvalidEvent)
	}
	if stepJSON == nil {
		return buf, "", nil
	}
	// The snapshot's step result carries the time, as its last field.
	return buf, string(appendAt(stepJSON[:len(stepJSON)-1], at)), nil
}

// Snapshot implements progress.Store in one round trip, which concurrent
// calls share (see batcher): each task's hash and steps are read in one
// MULTI/EXEC, so they agree with each other. A Redis whose used memory is
// past its maxmemory refuses every command queued in a MULTI, reads too
// (OOM): a snapshot so refused is read again, in a second round trip, by
// snapshot.lua, a script that says no-writes, which such a Redis runs and
// which reads the two at once as well.
func (b *Backend) Snapshot(ctx context.Context, taskID string) (progress.Snapshot, string, error) {
	if !queue.ValidID(taskID) {
		return progress.Snapshot{}, "", fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	r, err := b.snapshots.do(ctx, taskID)
	return r.snap, r.last, err
}

// snapshotRead is what Snapshot read of one task.
type snapshotRead struct {
	snap progress.Snapshot
	last string
}

// runSnapshots reads the snapshots of a batch of Snapshot calls (task
// ids) in one round trip: a MULTI/EXEC for each.
func (b *Backend) runSnapshots(ctx context.Context, calls []*batchCall[string, snapshotRead]) {
	c := b.client
	cmds := make(rueidis.Commands, 0, snapshotCommands*len(calls))
	for _, call := range calls {
		id := call.item
		cmds = append(cmds,
			c.B().Multi().Build(),
			c.B().Hmget().Key(b.taskKey(id)).Field(snapshotFields[:]...).Build(),
			c.B().Lrange().Key(b.stepsKey(id)).Start(0).Stop(-1).Build(),
			c.B().Exec().Build(),
		)
	}
	res := c.DoMulti(ctx, cmds...)
	for i, call := range calls {
		r := res[snapshotCommands*i : snapshotCommands*(i+1)]
		if replyCode(r[1].Error()) == "OOM" {
			call.res, call.err = b.readSnapshotScripted(ctx, call.item)
			continue
		}
		call.res, call.err = b.readSnapshot(ctx, call.item, r)
	}
}

// readSnapshotScripted reads task id's snapshot with snapshot.lua, for a
// Redis that refused its MULTI/EXEC for lack of memory (see Snapshot).
func (b *Backend) readSnapshotScripted(ctx context.Context, taskID string) (snapshotRead, error) {
	reply := snapshotScript.exec(ctx, b.client, []string{b.taskKey(taskID), b.stepsKey(taskID)}, snapshotFields[:])
	if err := reply.Error(); err != nil {
		return snapshotRead{}, b.wrap(ctx, "read snapshot of task "+taskID, err)
	}
	return b.decodeSnapshotReply(ctx, taskID, reply)
}

// snapshotCommands is the number of commands that read one snapshot.
const snapshotCommands = 4

// readSnapshot decodes the replies of the commands that read task id's
// snapshot (see runSnapshots).
func (b *Backend) readSnapshot(ctx context.Context, taskID string, res []rueidis.RedisResult) (snapshotRead, error) {
	for _, r := range res {
		if err := r.Error(); err != nil {
			return snapshotRead{}, b.wrap(ctx, "read snapshot of task "+taskID, err)
		}
	}
	return b.decodeSnapshotReply(ctx, taskID, res[3])
}

// decodeSnapshotReply decodes the reply that holds task id's snapshot
// fields and its steps: the EXEC of runSnapshots, or snapshot.lua's.
func (b *Backend) decodeSnapshotReply(ctx context.Context, taskID string, reply rueidis.RedisResult) (snapshotRead, error) {
	parts, err := reply.ToArray()
	if err != nil || len(parts) != 2 {
		return snapshotRead{}, fmt.Errorf("redisbackend: read snapshot of task %q: unexpected reply: %v", taskID, err)
	}
	var fields snapshotValues
	if err := hmgetValues(parts[0], fields[:]); err != nil {
		return snapshotRead{}, fmt.Errorf("redisbackend: read snapshot of task %q: %w", taskID, err)
	}
	if fields[sState] == "" {
		return snapshotRead{}, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}
	steps, err := parts[1].AsStrSlice()
	if err != nil {
		return snapshotRead{}, b.wrap(ctx, "read steps of task "+taskID, err)
	}
	snap, err := decodeSnapshot(fields, steps)
	if err != nil {
		return snapshotRead{}, fmt.Errorf("redisbackend: decode snapshot of task %q: %w", taskID, err)
	}
	return snapshotRead{snap: snap, last: fields[sLast]}, nil
}

func decodeSnapshot(fields snapshotValues, steps []string) (progress.Snapshot, error) {
	snap := progress.Snapshot{
		State: progress.State(fields[sState]),
		Details: progress.Details{
			Status:      fields[sStatus],
			StepResults: make([]progress.StepResult, len(steps)),
		},
	}
	if p := fields[sProgress]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return snap, fmt.Errorf("progress %q: %w", p, err)
		}
		snap.Details.Progress = n
	}
	if r := fields[sResult]; r != "" {
		snap.Details.FinalResult = json.RawMessage(r)
	}
	snap.UpdatedAt, snap.StartedAt, snap.EndedAt = msTime(fields[sUpdated]), msTime(fields[sStarted]), msTime(fields[sEnded])
	for i, s := range steps {
		if err := json.Unmarshal([]byte(s), &snap.Details.StepResults[i]); err != nil {
			return snap, fmt.Errorf("step %d: %w", i, err)
		}
	}
	return snap, nil
}

// Head implements progress.Store with one HMGET of the task hash's state
// and last fields: a few dozen bytes, whatever the size of the task.
func (b *Backend) Head(ctx context.Context, taskID string) (progress.State, string, error) {
	if !queue.ValidID(taskID) {
		return "", "", fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	reply, err := b.client.Do(ctx, b.client.B().Hmget().Key(b.taskKey(taskID)).Field(fieldState, fieldLast).Build()).ToMessage()
	if err != nil {
		return "", "", b.wrap(ctx, "read head of task "+taskID, err)
	}
	var fields [2]string
	if err := hmgetValues(reply, fields[:]); err != nil {
		return "", "", fmt.Errorf("redisbackend: read head of task %q: %w", taskID, err)
	}
	if fields[0] == "" {
		return "", "", fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}
	return progress.State(fields[0]), fields[1], nil
}

// Events implements progress.Store, reading the events list in pages (see
// readEvents): the first of pageSize elements, each next one of as many
// as readBudget holds at the size of the elements of the one before.
// What it returns is the task's whole log after afterID, which it holds
// at once; the pages' bytes are bounded, so that it does not hold them
// twice (as elements and as events) but for the first page. After an id
// of another Redis, whose events this one lost (see page.diverged), it
// returns every event from the first.
func (b *Backend) Events(ctx context.Context, taskID, afterID string) ([]progress.Event, error) {
	after, err := parseEventID(afterID)
	if err != nil {
		return nil, err
	}
	if !queue.ValidID(taskID) {
		return nil, fmt.Errorf("%w: %q: %w", progress.ErrNotFound, taskID, queue.ErrInvalidID)
	}
	var all []progress.Event
	var size elementSize
	for {
		p, err := b.readEvents(ctx, taskID, after, size.count(after), false)
		if err != nil {
			return nil, err
		}
		if p.diverged {
			// Also between two pages (a failover lost the ids of the
			// last page): from the first event again.
			all, after = all[:0], eventID{}
			continue
		}
		size.observe(p)
		n := len(all)
		if _, err := p.each(func(e progress.Event) bool {
			all = append(all, e)
			return true
		}); err != nil {
			return nil, fmt.Errorf("redisbackend: read events of task %q: %w", taskID, err)
		}
		if !p.more || len(all) == n {
			return all, nil
		}
		after, _ = parseEventID(all[len(all)-1].ID)
	}
}

// Reading a task's events list in pages (see readEvents).
const (
	// pageSize is the most elements of a task's events list (each the
	// events of one Append) one read takes.
	pageSize = 500
	// readBudget is about the most bytes of elements one read takes: a
	// read takes as many elements as it holds at the size they are
	// expected to have (see elementSize), so that a subscriber catching
	// up on a task of large elements (a report may be 1 MiB, an element
	// a batch of them) holds a few MiB at once, not up to 500 elements
	// (see TestCatchUpReadsLargeLogsInBoundedReplies). A task of a few
	// hundred small elements is still read in one page.
	readBudget = 4 << 20
)

// elementSize is the size, in bytes, that a reader of a task's events
// list expects the elements it reads next to have: the largest element
// of the last page it read, and before its first page the average of the
// list's elements, from its task hash's fields ebytes and last, which
// Subscribe reads; 0 when neither is known. (Largest, not average: a
// page of small elements and a large one is followed by a short one,
// then the count grows back.)
type elementSize struct {
	hint, largest int64
}

// count returns the elements of the next read after the id after: as
// many as readBudget holds at the expected size, at least one and at
// most pageSize, and one more for the element of after, which the read
// starts with (its events up to after are not new).
func (s elementSize) count(after eventID) int64 {
	n := int64(pageSize)
	size := s.largest
	if size == 0 {
		size = s.hint
	}
	if size > 0 {
		n = min(n, max(readBudget/size, 1))
	}
	if after.n > 0 {
		n = min(n+1, pageSize)
	}
	return n
}

// observe notes the sizes of the elements of p.
func (s *elementSize) observe(p page) {
	if len(p.elements) > 0 {
		s.largest = p.largest
	}
}

// setHint notes the bytes and the number of elements of a task's events
// list as its hash has them (fields ebytes and last, "" when missing).
func (s *elementSize) setHint(ebytes, last string) {
	bytes, err := strconv.ParseInt(ebytes, 10, 64)
	id, err2 := parseEventID(last)
	if err != nil || err2 != nil || id.n == 0 || bytes <= 0 {
		return
	}
	s.hint = bytes / int64(min(id.n, math.MaxInt64))
}

// page is what readEvents read: the elements (from the one at index
// start), the size of the largest, whether there may be more, whether the
// task had reached a terminal state, and, when asked for, how long its
// hash had left to live (see ttlOf). Its events are those of the
// elements after the id after (see each). diverged is set, and there are
// no elements, when the id the read was after has a tag that is not that
// of its element, or names an element the list does not have: the id
// was issued by another Redis, which had recorded events that this one
// lost (a failover), and others may have taken their places since. What
// follows the id here does not follow what its holder saw: it must read
// from the first event.
type page struct {
	elements                 []string
	largest                  int64 // the size of the largest element
	start                    uint64
	after                    eventID
	first                    eventBatch // of elements[0], when there is one
	more, terminal, diverged bool
	ttl                      time.Duration
}

// noExpiry is page.ttl when the hash has no expiry, or when it was not
// asked for.
const noExpiry time.Duration = -1

// readEvents reads, in one round trip, the task's state and up to count
// elements of its events list from that of the given id (the first for
// the zero id): whether there may be more (count elements were read),
// and whether the task had reached a terminal state when the read began
// (then every event of the task is in the list, so reading on to the end
// yields them all); or that the id is not of this list (see
// page.diverged). It fails with progress.ErrNotFound when the task does
// not exist. When ttl is set it also reads the time the task's hash has
// left to live (its PTTL): what a subscription waits for before it looks
// whether the task has expired. The page's events are decoded as
// page.each goes, not before, so that a page's elements and all their
// decoded events are not held at once. A read after an id should take
// two elements at least: the first is the id's, whose events may all be
// at or before it.
func (b *Backend) readEvents(ctx context.Context, taskID string, after eventID, count int64, ttl bool) (page, error) {
	p := page{ttl: noExpiry, after: after}
	// The element of the id after, which may hold later events too; the
	// first one for the zero id. None past any list: only the task's
	// state is read then.
	p.start = max(after.n, 1) - 1
	lists := !after.isMax() && after.n <= math.MaxInt64-uint64(count)
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	// HGET runs first: if it sees a terminal state, the LRANGE after it
	// sees the terminal event.
	cmds := rueidis.Commands{c.B().Hget().Key(b.taskKey(taskID)).Field(fieldState).Build()}
	if lists {
		start := int64(p.start)
		cmds = append(cmds, c.B().Lrange().Key(b.eventsKey(taskID)).Start(start).Stop(start+count-1).Build())
	}
	if ttl {
		cmds = append(cmds, c.B().Pttl().Key(b.taskKey(taskID)).Build())
	}
	res := c.DoMulti(ctx, cmds...)
	state, err := res[0].ToString()
	if rueidis.IsRedisNil(err) {
		return p, fmt.Errorf("%w: %q", progress.ErrNotFound, taskID)
	}
	if err != nil {
		return p, b.wrap(ctx, "read events of task "+taskID, err)
	}
	p.terminal = progress.State(state).Terminal()
	if ttl {
		ms, err := res[len(res)-1].AsInt64()
		if err != nil {
			return p, b.wrap(ctx, "read events of task "+taskID, err)
		}
		p.ttl = ttlOf(ms)
	}
	if !lists {
		// No list has element after.n: a tagged id names none.
		p.diverged = after.tag != ""
		return p, nil
	}
	elements, err := res[1].AsStrSlice()
	if err != nil {
		return p, b.wrap(ctx, "read events of task "+taskID, err)
	}
	if len(elements) > 0 {
		// Hashed once: for the check of the id's tag and for the ids
		// of its events.
		p.first = elementBatch(p.start, elements[0])
	}
	if after.tag != "" && (len(elements) == 0 || !p.first.holds(after)) {
		p.diverged = true
		return p, nil
	}
	for _, e := range elements {
		p.largest = max(p.largest, int64(len(e)))
	}
	p.elements, p.more = elements, int64(len(elements)) == count
	return p, nil
}

// elementBatch is the batch of events that element, the one at index i
// of a task's events list, holds.
func elementBatch(i uint64, element string) eventBatch {
	return eventBatch{last: eventID{i + 1, uint64(strings.Count(element, "\n")), elementTag(element)}, events: element}
}

// holds reports whether the batch, that of the element id.n, is the one
// that issued id: id's tag is the batch's, and the batch has an event k.
func (b eventBatch) holds(id eventID) bool {
	return b.last.tag == id.tag && b.last.k >= id.k
}

// each decodes the events of the page after p.after, in order, and calls
// fn with each until fn returns false, which it reports. An element is
// let go once its events are decoded, so that a subscriber that takes
// them slowly holds less and less of the page.
func (p *page) each(fn func(progress.Event) bool) (stopped bool, err error) {
	for i, element := range p.elements {
		batch := p.first
		if i > 0 {
			batch = elementBatch(p.start+uint64(i), element)
		}
		p.elements[i], p.first = "", eventBatch{}
		err := batch.each(func(id eventID, data string) error {
			if id.compare(p.after) <= 0 {
				return nil
			}
			e, err := decodeEvent(id, data)
			if err != nil {
				return err
			}
			if !fn(e) {
				stopped = true
				return errBreak
			}
			return nil
		})
		if err != nil || stopped {
			return stopped, err
		}
	}
	return false, nil
}

// ttlOf reads a PTTL reply: the time to live, 0 for a key gone (it
// expired between the commands of the read) and noExpiry for a key
// without an expiry.
func ttlOf(ms int64) time.Duration {
	switch {
	case ms == -1:
		return noExpiry
	case ms < 0:
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// eventBatch is the events of one Append as they are stored (an element
// of the events list) and published (in a live message): the id of the
// last event and every event's JSON, one per line. The events before the
// last have the ids just before its id: the same n and tag, consecutive k.
type eventBatch struct {
	last   eventID
	events string
}

// decodeEvent decodes the JSON of the event with the given id, as an
// eventBatch holds it.
func decodeEvent(id eventID, data string) (progress.Event, error) {
	var e progress.Event
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		return e, fmt.Errorf("decode event %s: %w", id, err)
	}
	e.ID = id.String()
	return e, nil
}

// errBreak stops eventBatch.each without an error.
var errBreak = errors.New("break")

// each calls fn with each event's id and JSON, in order, until fn returns
// an error: errBreak stops without one, any other is returned. A batch
// with more events than ids fit before its last is malformed.
func (b eventBatch) each(fn func(id eventID, data string) error) error {
	n := uint64(strings.Count(b.events, "\n")) + 1
	if b.events == "" || n > b.last.k+1 || b.last.n == 0 {
		return fmt.Errorf("malformed batch of events ending at %s", b.last)
	}
	id := eventID{b.last.n, b.last.k + 1 - n, b.last.tag}
	rest := b.events
	for {
		data, more, found := strings.Cut(rest, "\n")
		if err := fn(id, data); err != nil {
			if err == errBreak {
				return nil
			}
			return err
		}
		if !found {
			return nil
		}
		rest = more
		id.k++
	}
}

// errTaskGone reports whether err means that a task does not exist.
func errTaskGone(err error) bool { return errors.Is(err, progress.ErrNotFound) }

// msTime reads a time the scripts recorded, in Unix ms; zero for "" or a
// value that is not one.
func msTime(v string) time.Time {
	ms, err := strconv.ParseInt(v, 10, 64)
	if v == "" || err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
