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

// historyPrefix starts the cursors of a listing that has gone on into the
// History.
const historyPrefix = "h."

// backendPrefix starts the cursors of a listing with a History while it
// lists the backend's tasks: "b.<Unix ms of the oldest finished task it
// listed, empty for none>.<the backend's cursor>".
const backendPrefix = "b."

// List lists the tasks that o selects, newest first, one page at a time:
// see ListOptions and TaskPage. A state that is not one of the four, a
// limit out of range, Until before Since or a cursor this Inspector did
// not issue gives an error wrapping ErrInvalidQuery.
//
// With a History (InspectorConfig.History), a listing of all states or of
// SUCCESS or FAILURE goes on into it once the backend's tasks are listed:
// the tasks that ended before the oldest finished task the backend
// listed (the backend holds those that ended since), newest first, with
// the same filters (flow, state, owner, time range). A task still
// pending or running that entered its state before that one (a run
// longer than the backend's retention) is listed with the backend's
// tasks, ahead of the history's that ended after it.
func (i *Inspector) List(ctx context.Context, o ListOptions) (TaskPage, error) {
	if err := o.check(); err != nil {
		return TaskPage{}, err
	}
	if rest, ok := strings.CutPrefix(o.Cursor, historyPrefix); ok && i.history != nil {
		before, cursor, err := parseHistoryCursor(rest)
		if err != nil {
			return TaskPage{}, err
		}
		return i.fromHistory(ctx, o, before, cursor, nil)
	}
	// oldest is the time of the oldest finished task listed so far, in
	// Unix ms; -1 while none is known.
	oldest := int64(-1)
	legacy := o.Cursor != "" // a cursor of the backend's own, which tells none
	if rest, ok := strings.CutPrefix(o.Cursor, backendPrefix); ok {
		var err error
		if oldest, o.Cursor, err = parseBackendCursor(rest); err != nil {
			return TaskPage{}, err
		}
		legacy = false
	}
	var page TaskPage
	var err error
	if i.lister != nil {
		page, err = i.lister.ListTasks(ctx, o)
	} else {
		page, err = i.listAll(ctx, o)
	}
	if err != nil || i.history == nil || (o.State != "" && !o.State.Terminal()) {
		return page, err
	}
	for _, t := range page.Tasks {
		if t.State.Terminal() {
			oldest = t.ChangedAt().UnixMilli()
		}
	}
	if page.Next != "" {
		page.Next = backendCursor(oldest, page.Next)
		return page, nil
	}
	// The backend has nothing older: go on into the history, before the
	// oldest finished task listed. With none listed, the history holds
	// none the backend does.
	before := time.Now()
	switch {
	case oldest >= 0:
		before = time.UnixMilli(oldest)
	case legacy:
		// A cursor from before backend cursors told of finished tasks:
		// before its position, as then.
		c, err := ParseCursor(o.Cursor)
		if err != nil {
			return TaskPage{}, err
		}
		before = c.At
	}
	if len(page.Tasks) == o.Limit {
		page.Next = historyCursor(before, "")
		return page, nil
	}
	o.Limit -= len(page.Tasks)
	return i.fromHistory(ctx, o, before, "", page.Tasks)
}

// backendCursor is the cursor of a listing with a History whose backend
// listing goes on from cursor, oldest being the Unix ms of the oldest
// finished task listed so far (-1 for none).
func backendCursor(oldest int64, cursor string) string {
	ms := ""
	if oldest >= 0 {
		ms = strconv.FormatInt(oldest, 10)
	}
	return backendPrefix + ms + "." + cursor
}

// parseBackendCursor reads what backendCursor wrote, after its prefix.
func parseBackendCursor(s string) (oldest int64, cursor string, err error) {
	ms, cursor, ok := strings.Cut(s, ".")
	oldest = -1
	if ms != "" {
		n, perr := strconv.ParseInt(ms, 10, 64)
		if perr != nil || n < 0 {
			ok = false
		}
		oldest = n
	}
	if !ok || cursor == "" {
		return 0, "", fmt.Errorf("%w: malformed cursor %q", ErrInvalidQuery, backendPrefix+s)
	}
	return oldest, cursor, nil
}

// fromHistory lists a page of the History after the tasks listed already
// on this page.
func (i *Inspector) fromHistory(ctx context.Context, o ListOptions, before time.Time, cursor string, listed []TaskSummary) (TaskPage, error) {
	hp, err := i.history.ListHistory(ctx, HistoryQuery{State: o.State, Flow: o.Flow, Owner: o.Owner, Since: o.Since, Until: o.Until,
		Before: before, Limit: o.Limit, Cursor: cursor})
	if err != nil {
		return TaskPage{}, fmt.Errorf("queue: list the history: %w", err)
	}
	page := TaskPage{Tasks: append(listed, hp.Tasks...)}
	if page.Tasks == nil {
		page.Tasks = []TaskSummary{} // {"tasks": []}, not null
	}
	if hp.Next != "" {
		page.Next = historyCursor(before, hp.Next)
	}
	return page, nil
}

// historyCursor is the cursor of a listing that goes on in the History:
// "h.<Unix ms of before>.<the History's cursor, base64url>".
func historyCursor(before time.Time, cursor string) string {
	return historyPrefix + strconv.FormatInt(before.UnixMilli(), 10) + "." + base64.RawURLEncoding.EncodeToString([]byte(cursor))
}

// parseHistoryCursor reads what historyCursor wrote, after its prefix.
func parseHistoryCursor(s string) (before time.Time, cursor string, err error) {
	ms, enc, ok := strings.Cut(s, ".")
	n, perr := strconv.ParseInt(ms, 10, 64)
	raw, derr := base64.RawURLEncoding.DecodeString(enc)
	if !ok || perr != nil || derr != nil || n < 0 {
		return time.Time{}, "", fmt.Errorf("%w: malformed cursor %q", ErrInvalidQuery, historyPrefix+s)
	}
	return time.UnixMilli(n), string(raw), nil
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
