package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/progress"
)

// InspectorConfig configures an Inspector. The zero value is usable.
type InspectorConfig struct {
	// History, when set, is where a listing goes on once the backend has
	// no more tasks to list: the finished tasks kept past the backend's
	// retention (see History). Nil means that listings end with the
	// backend's tasks.
	History History
	// Logger receives the Inspector's warnings. Nil means slog.Default().
	Logger *slog.Logger
}

// Inspector is the operator's view of a queue: it lists and counts tasks,
// lists the workers and the dead letters, and acts on tasks (re-queues a
// dead one, cancels one or every task a filter selects). It is the third
// role beside the Broker, which accepts tasks, and the Worker, which runs
// them: a program that only looks at a queue (an ops page, the flows
// command) needs nothing else. It is safe for concurrent use.
//
// On a backend that lists its tasks itself (TaskLister, as the Redis
// backend does) every call costs the same however many tasks it holds.
// Otherwise (the Memory backend) a listing reads every task the backend
// holds, which suits the single process that backend is for.
type Inspector struct {
	broker  *Broker
	backend Backend
	store   progress.Store
	lister  TaskLister // nil when the backend is not one
	history History
	log     *slog.Logger
}

// NewInspector returns an Inspector of the tasks of backend, whose
// progress is recorded in store; a nil store means that the backend is
// the store, as for NewBroker. It panics on a nil backend.
func NewInspector(backend Backend, store progress.Store, cfg InspectorConfig) *Inspector {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := NewBroker(backend, store, BrokerConfig{Logger: cfg.Logger})
	lister, _ := backend.(TaskLister)
	return &Inspector{broker: b, backend: backend, store: b.store, lister: lister, history: cfg.History, log: cfg.Logger}
}

// Task returns one task with its snapshot, as Broker.Task does.
func (i *Inspector) Task(ctx context.Context, id string) (*TaskInfo, error) {
	return i.broker.Task(ctx, id)
}

// Dead lists the dead-letter set, as Broker.Dead does.
func (i *Inspector) Dead(ctx context.Context, limit int) ([]DeadTask, error) {
	return i.broker.Dead(ctx, limit)
}

// Requeue runs a dead task again, as Broker.Requeue does, and returns the
// id of the new task.
func (i *Inspector) Requeue(ctx context.Context, id string) (string, error) {
	return i.broker.Requeue(ctx, id)
}

// RequeueWith runs a dead task again, as Broker.RequeueWith does with the
// options o, and returns the id of the new task.
func (i *Inspector) RequeueWith(ctx context.Context, id string, o RequeueOptions) (string, error) {
	return i.broker.RequeueWith(ctx, id, o)
}

// Cancel asks one task to stop, as Broker.Cancel does.
func (i *Inspector) Cancel(ctx context.Context, id string) error {
	return i.broker.Cancel(ctx, id)
}

// historyPrefix started the cursors of an earlier version's listing that
// had gone on into the History ("h.<Unix ms>.<the History's cursor>"):
// they tell no position in the listing, and are refused.
const historyPrefix = "h."

// backendPrefix started the cursors of an earlier version's listing with
// a History while it listed the backend's tasks: "b.<Unix ms, or
// empty>.<the backend's cursor>". Their backend's cursor is the position
// they stand for.
const backendPrefix = "b."

// List lists the tasks that o selects, newest first, one page at a time:
// see ListOptions and TaskPage. A state that is not one of the four, a
// limit out of range, Until before Since or a cursor that is not one
// this Inspector issues gives an error wrapping ErrInvalidQuery.
//
// With a History (InspectorConfig.History), a listing of all states or of
// SUCCESS or FAILURE lists the History's tasks with the backend's, in
// the one order of a listing: each page reads a page of each, after the
// cursor, and keeps the newest of both, each task once (the backend's
// version of a task both hold). So a task the backend has forgotten
// comes at its place, whenever its retention ended, and a task still
// pending or running comes at the time it entered its state, among the
// finished tasks of either. A cursor is the position of the last task
// of its page, in both.
func (i *Inspector) List(ctx context.Context, o ListOptions) (TaskPage, error) {
	if err := o.check(); err != nil {
		return TaskPage{}, err
	}
	var after *Cursor
	if o.Cursor != "" {
		c, err := parseListCursor(o.Cursor)
		if err != nil {
			return TaskPage{}, err
		}
		after, o.Cursor = &c, c.String()
	}
	if i.history == nil || (o.State != "" && !o.State.Terminal()) {
		return i.listBackend(ctx, o)
	}
	return i.listMerged(ctx, o, after)
}

// parseListCursor reads a cursor of List: a position (Cursor.String), or
// the "b." cursor of an earlier version, which holds one. The "h." cursor
// of an earlier version holds none the listing can go on from: it is
// refused, with a message that says to start again.
func parseListCursor(s string) (Cursor, error) {
	if rest, ok := strings.CutPrefix(s, historyPrefix); ok {
		ms, enc, ok := strings.Cut(rest, ".")
		_, perr := strconv.ParseUint(ms, 10, 63)
		_, derr := base64.RawURLEncoding.DecodeString(enc)
		if !ok || perr != nil || derr != nil {
			return Cursor{}, fmt.Errorf("%w: malformed cursor %q", ErrInvalidQuery, s)
		}
		return Cursor{}, fmt.Errorf("%w: cursor %q was issued by an earlier version of flows, whose listing went on into the history apart; start the listing again without it",
			ErrInvalidQuery, s)
	}
	if rest, ok := strings.CutPrefix(s, backendPrefix); ok {
		ms, pos, ok := strings.Cut(rest, ".")
		if _, err := strconv.ParseUint(ms, 10, 63); !ok || ms != "" && err != nil {
			return Cursor{}, fmt.Errorf("%w: malformed cursor %q", ErrInvalidQuery, s)
		}
		s = pos
	}
	return ParseCursor(s)
}

// listBackend lists a page of the backend's tasks.
func (i *Inspector) listBackend(ctx context.Context, o ListOptions) (TaskPage, error) {
	if i.lister != nil {
		return i.lister.ListTasks(ctx, o)
	}
	return i.listAll(ctx, o)
}

// listMerged lists a page of the backend's tasks and the History's
// together, after the position after (nil for the newest): a page of
// each, merged in the order of a listing, each task once. A source whose
// page has a Next has listed its tasks down to its page's end (its
// frontier); the merged page keeps the tasks down to the newer frontier,
// where both are complete, and its Next is the position of its last task
// or, when fewer than o.Limit are known, that frontier.
func (i *Inspector) listMerged(ctx context.Context, o ListOptions, after *Cursor) (TaskPage, error) {
	bp, err := i.listBackend(ctx, o)
	if err != nil {
		return TaskPage{}, err
	}
	hp, err := i.history.ListHistory(ctx, HistoryQuery{State: o.State, Flow: o.Flow, Owner: o.Owner, Since: o.Since, Until: o.Until,
		After: after, Limit: o.Limit})
	if err != nil {
		return TaskPage{}, fmt.Errorf("queue: list the history: %w", err)
	}
	var front *Cursor // nil when both have listed their last task
	if bp.Next != "" {
		c, err := ParseCursor(bp.Next)
		if err != nil {
			return TaskPage{}, fmt.Errorf("queue: list: the backend's cursor %q is not a position (queue.Cursor): %v", bp.Next, err)
		}
		front = &c
	}
	if hp.Next != "" {
		if len(hp.Tasks) == 0 {
			return TaskPage{}, errors.New("queue: list the history: a page with a next cursor and no task")
		}
		// The newer of the two frontiers: past it, the source that
		// stopped there may hold tasks the page has not read.
		last := &hp.Tasks[len(hp.Tasks)-1]
		if c := CursorOf(last); front == nil || !front.Precedes(last) {
			front = &c
		}
	}
	page := TaskPage{Tasks: make([]TaskSummary, 0, o.Limit)}
	seen := make(map[string]bool, len(bp.Tasks)+len(hp.Tasks))
	more := false // tasks known past the page
	for b, h := 0, 0; b < len(bp.Tasks) || h < len(hp.Tasks); {
		var t *TaskSummary
		if h == len(hp.Tasks) || b < len(bp.Tasks) && compareListed(&bp.Tasks[b], &hp.Tasks[h]) <= 0 {
			t, b = &bp.Tasks[b], b+1
		} else {
			t, h = &hp.Tasks[h], h+1
		}
		if front != nil && front.Precedes(t) {
			break // past the frontier: the other source may hold newer ones
		}
		if seen[t.ID] || !o.Match(t) {
			continue
		}
		if len(page.Tasks) == o.Limit {
			more = true
			break
		}
		seen[t.ID] = true
		page.Tasks = append(page.Tasks, *t)
	}
	switch {
	case len(page.Tasks) == o.Limit && (more || front != nil):
		page.Next = CursorOf(&page.Tasks[o.Limit-1]).String()
	case len(page.Tasks) < o.Limit && front != nil:
		page.Next = front.String()
	}
	return page, nil
}

// summaries reads every task of a backend that is not a TaskLister (the
// Memory backend) with its snapshot, and the backend's queue counts.
func (i *Inspector) summaries(ctx context.Context) ([]TaskSummary, memView, error) {
	m, ok := i.backend.(*Memory)
	if !ok {
		return nil, memView{}, fmt.Errorf("queue: %T cannot list its tasks: %w", i.backend, errors.ErrUnsupported)
	}
	v := m.view()
	list := make([]TaskSummary, 0, len(v.tasks))
	for _, t := range v.tasks {
		snap, _, err := i.store.Snapshot(ctx, t.ID)
		if errors.Is(err, progress.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, v, err
		}
		list = append(list, summarize(t.ID, t, snap))
	}
	return list, v, nil
}

// listAll lists the tasks of a backend that is not a TaskLister by
// reading them all.
func (i *Inspector) listAll(ctx context.Context, o ListOptions) (TaskPage, error) {
	var after *Cursor
	if o.Cursor != "" {
		c, err := ParseCursor(o.Cursor)
		if err != nil {
			return TaskPage{}, err
		}
		after = &c
	}
	all, _, err := i.summaries(ctx)
	if err != nil {
		return TaskPage{}, err
	}
	page := TaskPage{Tasks: []TaskSummary{}}
	kept := all[:0]
	for _, s := range all {
		if o.Match(&s) && (after == nil || after.Precedes(&s)) {
			kept = append(kept, s)
		}
	}
	slices.SortFunc(kept, func(a, b TaskSummary) int { return compareListed(&a, &b) })
	if len(kept) > o.Limit {
		kept = kept[:o.Limit]
		page.Next = CursorOf(&kept[o.Limit-1]).String()
	}
	page.Tasks = append(page.Tasks, kept...)
	return page, nil
}

// Stats takes a picture of the queue: counts by state and flow, the
// queue's depth, throughput and latency over the last minute, and the
// workers of the backend's registry (see Stats).
func (i *Inspector) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var err error
	if i.lister != nil {
		st, err = i.lister.TaskStats(ctx)
	} else {
		st, err = i.statsAll(ctx)
	}
	if err != nil {
		return Stats{}, err
	}
	if d, ok := i.backend.(DepthReader); ok {
		depth, err := d.Depth(ctx)
		if err != nil {
			return Stats{}, err
		}
		st.Ready, st.Delayed, st.Running, st.HooksWaiting = depth.Ready, depth.Delayed, depth.Running, depth.HooksWaiting
	}
	st.Workers = []WorkerStatus{}
	if reg, ok := i.backend.(WorkerRegistry); ok {
		workers, err := reg.Workers(ctx)
		if err != nil {
			return Stats{}, err
		}
		for _, w := range workers {
			st.Workers = append(st.Workers, WorkerStatus{WorkerInfo: w, Alive: w.Alive(st.At)})
		}
	}
	return st, nil
}

// statsAll counts the tasks of a backend that is not a TaskLister by
// reading them all.
func (i *Inspector) statsAll(ctx context.Context) (Stats, error) {
	all, v, err := i.summaries(ctx)
	if err != nil {
		return Stats{}, err
	}
	now := time.Now().UTC()
	st := Stats{At: now, Dead: v.dead, Flows: []FlowCounts{}}
	if !v.oldestReady.IsZero() {
		st.OldestReady = v.oldestReady.UTC()
	}
	flows := map[string]*StateCounts{}
	var ended []TaskSummary
	st.LastMinute.Window = StatsWindow
	for _, s := range all {
		st.Counts.add(s.State, 1)
		c := flows[s.Flow]
		if c == nil {
			c = &StateCounts{}
			flows[s.Flow] = c
		}
		c.add(s.State, 1)
		if s.State.Terminal() && now.Sub(s.EndedAt) <= StatsWindow {
			ended = append(ended, s)
			if s.State == progress.StateSuccess {
				st.LastMinute.Succeeded++
			} else {
				st.LastMinute.Failed++
			}
		}
	}
	for name, c := range flows {
		st.Flows = append(st.Flows, FlowCounts{Flow: name, Counts: *c})
	}
	slices.SortFunc(st.Flows, func(a, b FlowCounts) int { return strings.Compare(a.Flow, b.Flow) })
	slices.SortFunc(ended, func(a, b TaskSummary) int { return b.EndedAt.Compare(a.EndedAt) })
	st.LastMinute.Measure(ended)
	return st, nil
}

// CancelFilter selects the tasks CancelMatching cancels.
type CancelFilter struct {
	// State is PENDING, PROGRESS, or "" for both (the states a task can
	// be cancelled in).
	State progress.State
	// Flow keeps the tasks of that flow; "" keeps all.
	Flow string
	// Owner keeps the tasks of that owner (Task.Owner, exactly); "" keeps
	// all. As for ListOptions.Owner, a backend without an index by owner
	// (Redis) reads a bounded number of tasks per call: see More.
	Owner string
	// Since and Until keep the tasks that entered their current state
	// (TaskSummary.ChangedAt: for a pending task, when it was enqueued or
	// handed back) in [Since, Until), as ListOptions.Since and Until do.
	// Until before Since is an invalid query.
	Since, Until time.Time
	// Limit is the most tasks cancelled by one call, 1 to MaxListLimit;
	// zero means MaxListLimit.
	Limit int
	// Cursor goes on where the call whose CancelResult.Next it is
	// stopped; "" starts at the newest task. A cursor holds its position
	// only: pass the same filter with it.
	Cursor string
}

// options is the listing of f in state, from cursor.
func (f *CancelFilter) options(state progress.State, cursor string) ListOptions {
	return ListOptions{State: state, Flow: f.Flow, Owner: f.Owner, Since: f.Since, Until: f.Until, Cursor: cursor}
}

// CancelResult is what CancelMatching did.
type CancelResult struct {
	// Cancelled are the ids of the tasks it asked to stop.
	Cancelled []string `json:"cancelled"`
	// AlreadyCancelled are the ids of the tasks it found already asked
	// to stop (TaskSummary.Cancelled) by an earlier call or Cancel, which
	// it leaves out of Cancelled: mostly running tasks, which stay
	// PROGRESS until their flow returns (or their worker's abandon delay
	// passes). It does not ask them again, except a task still PENDING,
	// whose earlier cancellation stopped before ending it: it ends it.
	// They do not count towards the filter's Limit. Nil when none.
	// Calls made at the same time may each count in Cancelled a task
	// they all found not asked yet.
	AlreadyCancelled []string `json:"already_cancelled,omitempty"`
	// More is set when it stopped with tasks left that the filter
	// selects: at the filter's Limit, or at its bound of tasks read,
	// which an owner on a backend without an index by owner, or many
	// tasks already asked to stop, may reach first (then there may be
	// none left to cancel, and a call may cancel none and still have
	// More). Call it again with Cursor set to Next for them.
	More bool `json:"more"`
	// Next, when More is set, is where the call stopped: the Cursor of a
	// call that goes on from there. A call from the start works too, but
	// reads again the tasks this one read and did not cancel.
	Next string `json:"next,omitempty"`
}

// cancelPages bounds the pages of a listing (ListTasks, each with its own
// bounded cost) one CancelMatching call reads: enough for a filter the
// backend indexes to cancel its Limit and say whether more are left, and
// a bound on the tasks read for one it does not (the owner, on Redis).
const cancelPages = 6

// cancelCursor is the CancelResult.Next of a call that stopped at the
// listing of state from cursor: "<state>:<the listing's cursor>".
func cancelCursor(state progress.State, cursor string) string {
	return string(state) + ":" + cursor
}

// parseCancelCursor reads what cancelCursor wrote: the index of its state
// in states, and the listing's cursor.
func parseCancelCursor(s string, states []progress.State) (int, string, error) {
	state, cursor, ok := strings.Cut(s, ":")
	k := slices.Index(states, progress.State(state))
	if !ok || k < 0 {
		return 0, "", fmt.Errorf("%w: malformed cursor %q (not one of this filter's)", ErrInvalidQuery, s)
	}
	if cursor != "" {
		if _, err := ParseCursor(cursor); err != nil {
			return 0, "", err
		}
	}
	return k, cursor, nil
}

// CancelMatching asks every task that f selects to stop, as Cancel does
// for one, newest first (the pending tasks, then the running ones), up
// to f.Limit tasks, from f.Cursor. A task that ends meanwhile is left
// out, and one already asked to stop is not asked again (see
// CancelResult.AlreadyCancelled), so that a call made again from the
// start cancels only the tasks not asked yet. One call reads a bounded
// number of pages of the listing of f (see CancelResult.More). A state
// other than PENDING, PROGRESS or "", a limit out of range, Until before
// Since or a cursor no call with this state issued gives an error
// wrapping ErrInvalidQuery.
func (i *Inspector) CancelMatching(ctx context.Context, f CancelFilter) (CancelResult, error) {
	states := []progress.State{progress.StatePending, progress.StateProgress}
	switch f.State {
	case "":
	case progress.StatePending, progress.StateProgress:
		states = []progress.State{f.State}
	default:
		return CancelResult{}, fmt.Errorf("%w: cannot cancel tasks in state %q (want PENDING, PROGRESS or none)", ErrInvalidQuery, f.State)
	}
	if f.Limit == 0 {
		f.Limit = MaxListLimit
	}
	if f.Limit < 1 || f.Limit > MaxListLimit {
		return CancelResult{}, fmt.Errorf("%w: limit %d out of range 1-%d", ErrInvalidQuery, f.Limit, MaxListLimit)
	}
	if err := checkRange(f.Since, f.Until); err != nil {
		return CancelResult{}, err
	}
	k, cursor := 0, ""
	if f.Cursor != "" {
		var err error
		if k, cursor, err = parseCancelCursor(f.Cursor, states); err != nil {
			return CancelResult{}, err
		}
	}
	res := CancelResult{Cancelled: []string{}}
	o := f.options(states[k], cursor)
	for pages := 0; ; pages++ {
		full := len(res.Cancelled) == f.Limit
		if pages == cancelPages {
			res.More, res.Next = true, cancelCursor(o.State, o.Cursor)
			return res, nil
		}
		// Once full, a page of one tells whether any task is left.
		o.Limit = max(f.Limit-len(res.Cancelled), 1)
		page, err := i.List(ctx, o)
		if err != nil {
			return res, err
		}
		if full && len(page.Tasks) > 0 {
			res.More, res.Next = true, cancelCursor(o.State, o.Cursor)
			return res, nil
		}
		for _, s := range page.Tasks {
			if s.Cancelled && s.State != progress.StatePending {
				res.AlreadyCancelled = append(res.AlreadyCancelled, s.ID)
				continue
			}
			err := i.broker.Cancel(ctx, s.ID)
			switch {
			case err == nil && s.Cancelled:
				res.AlreadyCancelled = append(res.AlreadyCancelled, s.ID)
			case err == nil:
				res.Cancelled = append(res.Cancelled, s.ID)
			case errors.Is(err, ErrFinished), errors.Is(err, ErrNotFound):
			default:
				return res, err
			}
		}
		switch {
		case page.Next != "":
			o.Cursor = page.Next
		case k+1 < len(states):
			k++
			o.State, o.Cursor = states[k], ""
		default:
			return res, nil
		}
	}
}
