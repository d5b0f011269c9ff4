package queue

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultRetention is how long a Memory backend keeps finished tasks
// readable when MemoryConfig.Retention is zero.
const DefaultRetention = 24 * time.Hour

// MemoryConfig configures a Memory backend. The zero value is usable.
type MemoryConfig struct {
	// Retention is how long an acknowledged or buried task stays readable
	// by Get, and a buried one in the dead-letter set, before its record
	// is dropped. Zero means DefaultRetention; NewMemory panics on a
	// negative value.
	Retention time.Duration
}

// Memory is a Backend that keeps everything in the memory of one process:
// the default for a single binary, and the backend of tests. Its zero value
// is not usable; call NewMemory.
//
// Ready tasks are leased in the order they became ready. Tasks that are not
// due yet (Task.RunAt in the future, or given back with Retry for later)
// wait in a heap ordered by due time. Fetch sleeps until a task is
// enqueued, given back, falls due or has its lease expire; it never polls.
//
// A lease that passes its deadline stays good until a Fetch reclaims the
// task; from then on Extend, Ack and Retry with it fail with ErrLeaseLost.
//
// Memory use is bounded by the tasks not yet acknowledged plus those
// acknowledged or buried within the retention period: a dead task leaves
// the dead-letter set when its record expires. The one exception is a
// Cancellations listener that stops reading without ending its context:
// the ids it has not taken are kept for it (never dropped), so a listener
// must read its channel or end its context.
type Memory struct {
	retention time.Duration

	mu        sync.Mutex
	tasks     map[string]*memTask
	ready     fifo[*memTask]
	timers    timerHeap           // delayed tasks by due time, leased tasks by deadline
	finished  fifo[*memTask]      // acknowledged tasks, by time of expiry
	dead      map[string]*memTask // buried tasks, by id
	wake      chan struct{}       // closed (and replaced) when a task becomes ready
	listeners map[*cancelListener]struct{}
	seq       uint64                // lease counter, for tokens
	workers   map[string]WorkerInfo // the worker registry, by name
	beats     map[string]memBeats   // each worker's last heartbeat, deadline and contact (see memory_reclaim.go)
	gates     map[string]*memGate   // the flows with a Limit, by name (see memory_gate.go)
	// gateNext is when the rate of a flow next lets a waiting task start,
	// zero if none waits for that (set by advance).
	gateNext time.Time
	callers  map[string]*memCaller // caller limits (see memory_callerlimits.go)
	admitted uint64                // AdmitCaller calls, for sweeps of callers
}

type memState int

const (
	memReady memState = iota
	memDelayed
	memLeased
	memDone
	// memWaiting: due, and waiting for a slot of its flow (memGate).
	memWaiting
)

type memTask struct {
	task  Task
	state memState
	// at is the due time of a delayed task, the deadline of a leased one
	// and the expiry of the record of a finished one.
	at    time.Time
	token string // of the current lease
	index int    // in Memory.timers, -1 when not there
	// readyAt is when the task last became ready (memReady).
	readyAt time.Time
	// buried is set while the task is in the dead-letter set.
	buried *DeadTask
	// slot is set while the task holds a slot of its flow's Limit (see
	// memory_gate.go).
	slot bool
	// unstarted is set while the task holds a start of its flow's rate
	// that no lease has taken yet (see memGate.unstarted).
	unstarted bool
}

// hooksDue reports whether mt was given back for its finish hooks to run
// again (EndHooksPending) and has not been leased since: it is ready, or
// waits for its time (waitsForHooks). m.mu is held.
func (mt *memTask) hooksDue() bool {
	return mt.task.PreviousEnd == EndHooksPending && (mt.state == memReady || mt.state == memDelayed)
}

// ended records why mt's attempt ended: in PreviousEnd, and in
// CountedEnd too when that end counts against MaxAttempts.
func (mt *memTask) ended(why AttemptEnd) {
	mt.task.PreviousEnd = why
	if why.Counts() {
		mt.task.CountedEnd = why
	}
}

// read returns a copy of mt's task as Get and the listings read it, with
// Task.HooksDue. m.mu is held.
func (mt *memTask) read() *Task {
	t := mt.task.clone()
	t.HooksDue = mt.hooksDue()
	return t
}

// waitsForHooks reports whether mt is delayed because it was given back
// for its finish hooks to run again: it has ended, and waits for its time
// whether or not it is cancelled. m.mu is held.
func (mt *memTask) waitsForHooks() bool { return mt.state == memDelayed && mt.hooksDue() }

// NewMemory returns an empty in-memory backend. It panics on a negative
// cfg.Retention.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Retention < 0 {
		panic(fmt.Sprintf("queue: NewMemory: MemoryConfig.Retention %v is negative (zero means DefaultRetention)", cfg.Retention))
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	return &Memory{
		retention: cfg.Retention,
		tasks:     map[string]*memTask{},
		dead:      map[string]*memTask{},
		wake:      make(chan struct{}),
		listeners: map[*cancelListener]struct{}{},
		workers:   map[string]WorkerInfo{},
		beats:     map[string]memBeats{},
		gates:     map[string]*memGate{},
	}
}

var _ Backend = (*Memory)(nil)

// Enqueue implements Backend. It stores a copy of t; an id that is
// already stored is refused.
func (m *Memory) Enqueue(ctx context.Context, t *Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enqueue(t, time.Now())
}

// enqueue stores a copy of t and queues it. m.mu is held.
func (m *Memory) enqueue(t *Task, now time.Time) error {
	if t == nil || !ValidID(t.ID) {
		return fmt.Errorf("queue: enqueue: %w", ErrInvalidID)
	}
	m.expire(now)
	if _, ok := m.tasks[t.ID]; ok {
		return fmt.Errorf("queue: enqueue: task %s is already stored", t.ID)
	}
	mt := &memTask{task: *t.clone(), index: -1}
	mt.task.HooksDue = false // see read
	m.tasks[t.ID] = mt
	if t.RunAt.After(now) {
		mt.state, mt.at = memDelayed, t.RunAt
		heap.Push(&m.timers, mt)
		m.broadcast() // fetchers sleeping until a later time must wake earlier
		return nil
	}
	m.due(mt, now)
	return nil
}

// Fetch implements Backend. It returns an error for max < 1 or lease <= 0.
func (m *Memory) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*Lease, error) {
	if max < 1 {
		return nil, fmt.Errorf("queue: fetch: max %d must be at least 1", max)
	}
	if lease <= 0 {
		return nil, fmt.Errorf("queue: fetch: lease %s must be positive", lease)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m.mu.Lock()
		now := time.Now()
		m.advance(now)
		if m.ready.len() > 0 {
			leases := make([]*Lease, 0, min(max, m.ready.len()))
			for len(leases) < max && m.ready.len() > 0 {
				mt := m.ready.pop()
				m.seq++
				mt.state = memLeased
				mt.at = now.Add(lease)
				mt.token = worker + "#" + strconv.FormatUint(m.seq, 10)
				mt.task.Attempt++
				m.started(mt, now)
				heap.Push(&m.timers, mt)
				leases = append(leases, &Lease{Task: mt.task.clone(), Token: mt.token, Deadline: mt.at})
			}
			m.mu.Unlock()
			return leases, nil
		}
		wake := m.wake
		var due <-chan time.Time
		var timer *time.Timer
		next := m.gateNext
		if len(m.timers) > 0 && (next.IsZero() || m.timers[0].at.Before(next)) {
			next = m.timers[0].at
		}
		if !next.IsZero() {
			timer = time.NewTimer(next.Sub(now))
			due = timer.C
		}
		m.mu.Unlock()

		select {
		case <-ctx.Done():
		case <-wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// Extend implements Backend. On success, and when it reports
// ErrCancelled, it also moves l.Deadline.
func (m *Memory) Extend(ctx context.Context, l *Lease, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("queue: extend: lease %s must be positive", lease)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mt, err := m.held(l)
	if err != nil {
		return err
	}
	mt.at = time.Now().Add(lease)
	heap.Fix(&m.timers, mt.index)
	l.Deadline = mt.at
	if mt.task.Cancelled {
		return ErrCancelled
	}
	return nil
}

// Ack implements Backend. The task stays readable by Get for the
// retention period.
func (m *Memory) Ack(ctx context.Context, l *Lease) error {
	return m.finish(ctx, l, nil)
}

// Bury implements Backend. The task stays readable by Get, and listed by
// Dead, for the retention period.
func (m *Memory) Bury(ctx context.Context, l *Lease, reason string) error {
	return m.finish(ctx, l, &reason)
}

// finish acknowledges the task of l and buries it when reason is not nil.
func (m *Memory) finish(ctx context.Context, l *Lease, reason *string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mt, err := m.held(l)
	if err != nil {
		return err
	}
	now := time.Now()
	heap.Remove(&m.timers, mt.index)
	mt.state, mt.token, mt.at = memDone, "", now.Add(m.retention)
	if l.NoRun {
		mt.task.NoRuns++
	}
	m.release(mt, now)
	if reason != nil {
		mt.buried = &DeadTask{ID: mt.task.ID, Flow: mt.task.Flow, Reason: *reason, Attempts: mt.task.Attempts(), BuriedAt: now.UTC()}
		m.dead[mt.task.ID] = mt
	}
	m.finished.push(mt)
	m.expire(now)
	return nil
}

// Dead implements Backend.
func (m *Memory) Dead(ctx context.Context, limit int) ([]DeadTask, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(time.Now())
	list := make([]DeadTask, 0, len(m.dead))
	for _, mt := range m.dead {
		list = append(list, *mt.buried)
	}
	slices.SortFunc(list, func(a, b DeadTask) int {
		if c := b.BuriedAt.Compare(a.BuriedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if limit > 0 && len(list) > limit {
		list = list[:limit]
	}
	return list, nil
}

// Requeue implements Backend.
func (m *Memory) Requeue(ctx context.Context, deadID string, t *Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	m.expire(now)
	mt, ok := m.dead[deadID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotDead, deadID)
	}
	if err := m.enqueue(t, now); err != nil {
		return err
	}
	mt.buried = nil
	delete(m.dead, deadID)
	return nil
}

// Retry implements Backend. An at in the past, or a cancelled task given
// back for a retry of its flow (why.Counts()), is ready at once, behind
// the tasks already ready; a hand-back (the progress store down, say)
// and a task given back for its finish hooks (EndHooksPending) wait for
// at, cancelled or not: the worker asked for that pause.
func (m *Memory) Retry(ctx context.Context, l *Lease, at time.Time, why AttemptEnd) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mt, err := m.held(l)
	if err != nil {
		return err
	}
	heap.Remove(&m.timers, mt.index)
	now := time.Now()
	mt.token = ""
	mt.ended(why)
	switch {
	case why == EndHooksPending:
		mt.task.HookRetries++
	case !why.Counts():
		mt.task.HandBacks++
	}
	if l.NoRun {
		mt.task.NoRuns++
	}
	// The task gives its slot back: its next attempt waits for one (a
	// task given back for its finish hooks does not, see due).
	m.release(mt, now)
	if at.After(now) && (!mt.task.Cancelled || !why.Counts()) {
		mt.state, mt.at = memDelayed, at
		heap.Push(&m.timers, mt)
		m.broadcast()
		return nil
	}
	m.due(mt, now)
	return nil
}

// Get implements Backend. The task returned is a copy.
func (m *Memory) Get(ctx context.Context, id string) (*Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(time.Now())
	mt, ok := m.tasks[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return mt.read(), nil
}

// Cancel implements Backend. A task waiting for its due time becomes
// ready at once, unless it waits to run its finish hooks again
// (waitsForHooks): it has ended, and waits for its time. Cancelling a
// task twice, or a finished one that is still retained, sets the flag and
// tells the listeners again.
func (m *Memory) Cancel(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire(time.Now())
	mt, ok := m.tasks[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	mt.task.Cancelled = true
	switch {
	case mt.waitsForHooks():
	case mt.state == memDelayed:
		heap.Remove(&m.timers, mt.index)
		m.makeReady(mt)
	case mt.state == memWaiting:
		m.makeReady(mt) // its gate drops it (see admit)
	}
	for l := range m.listeners {
		l.add(id)
	}
	return nil
}

// Cancellations implements Backend. Every listener gets every id, in the
// order of the Cancel calls: a listener that reads slowly holds up no one
// and loses nothing (see Memory). The channel is closed soon after ctx
// ends.
func (m *Memory) Cancellations(ctx context.Context) (<-chan string, error) {
	l := &cancelListener{signal: make(chan struct{}, 1)}
	m.mu.Lock()
	m.listeners[l] = struct{}{}
	m.mu.Unlock()

	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.listeners, l)
			m.mu.Unlock()
		}()
		for {
			for _, id := range l.take() {
				select {
				case out <- id:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-l.signal:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// held returns the task that l leases, or ErrLeaseLost. m.mu is held.
func (m *Memory) held(l *Lease) (*memTask, error) {
	if l == nil || l.Task == nil {
		return nil, fmt.Errorf("%w: no lease", ErrLeaseLost)
	}
	mt, ok := m.tasks[l.Task.ID]
	if !ok || mt.state != memLeased || mt.token != l.Token {
		return nil, fmt.Errorf("%w: task %s", ErrLeaseLost, l.Task.ID)
	}
	return mt, nil
}

// makeReady queues mt behind the ready tasks and wakes the fetchers.
// m.mu is held.
func (m *Memory) makeReady(mt *memTask) {
	mt.state, mt.at, mt.token, mt.readyAt = memReady, time.Time{}, "", time.Now()
	m.ready.push(mt)
	m.broadcast()
}

// broadcast wakes every Fetch waiting for work. m.mu is held.
func (m *Memory) broadcast() {
	close(m.wake)
	m.wake = make(chan struct{})
}

// advance makes ready the delayed tasks that are due and the leased tasks
// whose deadline has passed (their attempt ended: EndLeaseExpired), in
// time order, and drops expired records. m.mu is held.
func (m *Memory) advance(now time.Time) {
	for len(m.timers) > 0 && !m.timers[0].at.After(now) {
		mt := heap.Pop(&m.timers).(*memTask)
		if mt.state == memLeased {
			// Taken back: the task keeps its slot, if it has one.
			mt.ended(EndLeaseExpired)
			mt.state, mt.at, mt.token, mt.readyAt = memReady, time.Time{}, "", now
			m.ready.push(mt)
			continue
		}
		m.due(mt, now)
	}
	m.gateNext = m.admitDue(now)
	m.expire(now)
}

// expire drops the records of finished tasks whose retention has passed.
// m.mu is held.
func (m *Memory) expire(now time.Time) {
	for m.finished.len() > 0 && !m.finished.peek().at.After(now) {
		id := m.finished.pop().task.ID
		delete(m.tasks, id)
		delete(m.dead, id)
	}
}

// clone returns a copy of t that shares no memory with it.
func (t *Task) clone() *Task {
	c := *t
	c.Inputs = slices.Clone(t.Inputs)
	return &c
}

// cancelListener holds the cancelled ids one Cancellations channel has not
// delivered yet.
type cancelListener struct {
	mu      sync.Mutex
	pending []string
	signal  chan struct{} // one buffered wake-up
}

func (l *cancelListener) add(id string) {
	l.mu.Lock()
	l.pending = append(l.pending, id)
	l.mu.Unlock()
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

func (l *cancelListener) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := l.pending
	l.pending = nil
	return ids
}

// fifo is a first-in first-out queue whose memory shrinks as it drains.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) peek() T { return q.items[q.head] }

func (q *fifo[T]) pop() T {
	var zero T
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head >= 64 && q.head*2 >= len(q.items) {
		q.items = append(q.items[:0:0], q.items[q.head:]...)
		q.head = 0
	}
	return v
}

// timerHeap orders tasks by their at time (container/heap).
type timerHeap []*memTask

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *timerHeap) Push(x any) {
	mt := x.(*memTask)
	mt.index = len(*h)
	*h = append(*h, mt)
}

func (h *timerHeap) Pop() any {
	old := *h
	n := len(old) - 1
	mt := old[n]
	old[n] = nil
	mt.index = -1
	*h = old[:n]
	return mt
}

// Depth implements DepthReader. It counts the ready, delayed and leased
// tasks, and those waiting to run their finish hooks again, one by one:
// it takes time in proportion to them, not to every task kept. A
// cancelled task that waits for a worker to drop it is not Ready: it
// waits for no run.
func (m *Memory) Depth(ctx context.Context) (Depth, error) {
	if err := ctx.Err(); err != nil {
		return Depth{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advance(time.Now())
	var d Depth
	for _, mt := range m.ready.items[m.ready.head:] {
		if !mt.task.Cancelled { // a cancelled task waits for no run
			d.Ready++
		}
	}
	for _, g := range m.gates {
		for _, mt := range g.waiting.items[g.waiting.head:] {
			if mt.state == memWaiting { // not cancelled meanwhile
				d.Delayed++
			}
		}
	}
	for _, mt := range m.timers {
		switch {
		case mt.waitsForHooks():
			d.HooksWaiting++ // ended: its flow does not run again
		case mt.state == memDelayed:
			d.Delayed++
		case mt.state == memLeased:
			d.Running++
		}
	}
	return d, nil
}
