package progress

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// DefaultRetention is how long a MemoryStore keeps a task after its last
// update when MemoryConfig.Retention is zero.
const DefaultRetention = 24 * time.Hour

// MemoryConfig configures a MemoryStore. The zero value is usable.
type MemoryConfig struct {
	// Retention is how long a task and its event log are kept after the
	// task's last Create or Append. Zero means DefaultRetention;
	// NewMemoryStore panics on a negative value.
	Retention time.Duration
}

// MemoryStore is a Backend that keeps everything in the memory of one
// process: the default for a single server with in-process workers, and a
// handy store for tests.
//
// Event ids are decimal integers counted per task from "1", so they sort
// numerically; "0" is accepted as an afterID meaning "before the first
// event". Anything that is not a non-negative decimal integer is refused
// with ErrBadEventID.
//
// A task is dropped, with its log, Retention after its last update. Expired
// tasks are swept lazily by the store's own calls, oldest first, so memory
// stays bounded by the tasks updated within the retention period and no
// background goroutine is needed. A subscription of a task ends when the
// task's retention passes, whether or not another call comes to sweep it.
//
// A MemoryStore must be created with NewMemoryStore; it is safe for
// concurrent use.
type MemoryStore struct {
	retention time.Duration
	now       func() time.Time // replaced in tests

	mu    sync.Mutex
	tasks map[string]*memoryTask
	// byAge holds every stored *memoryTask, least recently updated first,
	// so that expired tasks are found at its front.
	byAge *list.List
}

// memoryTask is one task of a MemoryStore. Every field is guarded by the
// store's mutex; events, once appended, are never modified.
type memoryTask struct {
	id      string
	snap    Snapshot
	events  []Event
	updated time.Time
	elem    *list.Element
	// changed is closed and replaced on every Append and when the task is
	// dropped: the broadcast that wakes subscribers.
	changed chan struct{}
	dropped bool
	// checkpoints are the task's recorded steps by key (see
	// CheckpointStore); nil until the first is saved.
	checkpoints map[string]Checkpoint
	// appendKey is the append key of the task's last keyed Append (see
	// WithAppendKey).
	appendKey string
}

// NewMemoryStore returns an empty in-memory store configured by cfg. It
// panics on a negative cfg.Retention.
func NewMemoryStore(cfg MemoryConfig) *MemoryStore {
	if cfg.Retention < 0 {
		panic(fmt.Sprintf("progress: NewMemoryStore: MemoryConfig.Retention %v is negative (zero means DefaultRetention)", cfg.Retention))
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	return &MemoryStore{
		retention: cfg.Retention,
		now:       time.Now,
		tasks:     map[string]*memoryTask{},
		byAge:     list.New(),
	}
}

var (
	_ Backend         = (*MemoryStore)(nil)
	_ CheckpointStore = (*MemoryStore)(nil)
)

// sweepLocked drops every task whose retention has passed. Tasks are kept
// in order of last update, so the cost is proportional to the number of
// tasks dropped. s.mu must be held.
func (s *MemoryStore) sweepLocked(now time.Time) {
	for e := s.byAge.Front(); e != nil; e = s.byAge.Front() {
		t := e.Value.(*memoryTask)
		if now.Sub(t.updated) < s.retention {
			return
		}
		s.byAge.Remove(e)
		delete(s.tasks, t.id)
		t.dropped = true
		close(t.changed)
	}
}

// touchLocked marks t as updated at now. s.mu must be held.
func (s *MemoryStore) touchLocked(t *memoryTask, now time.Time) {
	t.updated = now
	s.byAge.MoveToBack(t.elem)
}

// taskLocked sweeps expired tasks and returns the task called id, or an
// error wrapping ErrNotFound. s.mu must be held.
func (s *MemoryStore) taskLocked(id string) (*memoryTask, error) {
	s.sweepLocked(s.now())
	t, ok := s.tasks[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return t, nil
}

// Len returns the number of tasks currently stored, after dropping those
// whose retention has passed.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now())
	return len(s.tasks)
}

// Create implements Store.
func (s *MemoryStore) Create(ctx context.Context, taskID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweepLocked(now)
	if _, ok := s.tasks[taskID]; ok {
		return fmt.Errorf("%w: %q", ErrExists, taskID)
	}
	t := &memoryTask{id: taskID, snap: NewSnapshot(), updated: now, changed: make(chan struct{})}
	t.elem = s.byAge.PushBack(t)
	s.tasks[taskID] = t
	return nil
}

// Append implements Store. The events are validated and checked against
// the task's terminal state before anything is recorded, so a failed call
// changes nothing. Appending no events changes nothing and returns the id
// of the task's last event.
//
// MemoryStore honours append keys (see WithAppendKey): a call whose key
// is that of the task's last keyed call records nothing and returns the
// id of the task's last event, even once the task has ended if the call
// ends it (the call that ended it, made again). Its calls never have an
// unknown outcome, so it never returns ErrMaybeSent.
func (s *MemoryStore) Append(ctx context.Context, taskID string, events ...Event) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return "", fmt.Errorf("progress: append to task %q: event %d: %w", taskID, i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return "", err
	}
	if len(events) == 0 {
		return lastID(t.events), nil
	}
	key := AppendKey(ctx)
	finished := t.snap.State.Terminal()
	if key != "" && key == t.appendKey && (!finished || events[len(events)-1].Terminal()) {
		return lastID(t.events), nil
	}
	for i, e := range events {
		if finished {
			return "", fmt.Errorf("%w: task %q: event %d not recorded", ErrFinished, taskID, i)
		}
		finished = e.Terminal()
	}
	if key != "" {
		t.appendKey = key
	}
	now := s.now()
	for _, e := range events {
		e = cloneEvent(e)
		e.ID = strconv.Itoa(len(t.events) + 1)
		e.At = now.UTC()
		t.events = append(t.events, e)
		t.snap.Apply(e)
	}
	s.touchLocked(t, now)
	close(t.changed)
	t.changed = make(chan struct{})
	return lastID(t.events), nil
}

// Snapshot implements Store.
func (s *MemoryStore) Snapshot(ctx context.Context, taskID string) (Snapshot, string, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return Snapshot{}, "", err
	}
	return t.snap.Clone(), lastID(t.events), nil
}

// Head implements Store.
func (s *MemoryStore) Head(ctx context.Context, taskID string) (State, string, error) {
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return "", "", err
	}
	return t.snap.State, lastID(t.events), nil
}

// Events implements Store.
func (s *MemoryStore) Events(ctx context.Context, taskID, afterID string) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after, err := parseMemoryID(afterID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return nil, err
	}
	return cloneEvents(t.events[min(after, len(t.events)):]), nil
}

// Subscribe implements Subscriber. Each subscription has one goroutine that
// reads the task's log from its own cursor, so a slow reader loses nothing
// and holds up no one; it ends when ctx ends, after the terminal event, or
// when the task's retention passes. Subscribing after the last event of a finished
// task yields a channel that is closed at once; subscribing after an id the
// task has not reached yet waits for it.
func (s *MemoryStore) Subscribe(ctx context.Context, taskID, afterID string) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after, err := parseMemoryID(afterID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	t, err := s.taskLocked(taskID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ch := make(chan Event)
	go s.feed(ctx, t, after, ch)
	return ch, nil
}

// feed sends t's events after cursor to ch until the terminal event, the
// end of ctx or the task's removal, then closes ch. While it waits, a
// timer set to the end of t's retention has it sweep the store then, so
// that the subscription of a task nobody writes to any more ends when
// the task expires, not at some later call of the store.
func (s *MemoryStore) feed(ctx context.Context, t *memoryTask, cursor int, ch chan<- Event) {
	defer close(ch)
	expiry := time.NewTimer(s.retention)
	defer expiry.Stop()
	for {
		s.mu.Lock()
		now := s.now()
		s.sweepLocked(now)
		// Appended events are never modified and the slice only grows, so
		// the backlog can be read after the lock is released.
		backlog := t.events[min(cursor, len(t.events)):]
		finished := t.snap.State.Terminal()
		dropped := t.dropped
		changed := t.changed
		left := t.updated.Add(s.retention).Sub(now)
		s.mu.Unlock()

		for _, e := range backlog {
			select {
			case ch <- cloneEvent(e):
			case <-ctx.Done():
				return
			}
			cursor++
			if e.Terminal() {
				return
			}
		}
		if len(backlog) > 0 {
			continue // more may have come while sending
		}
		if finished || dropped {
			return
		}
		expiry.Reset(left)
		select {
		case <-changed:
		case <-expiry.C:
		case <-ctx.Done():
			return
		}
	}
}

// parseMemoryID turns an afterID into the number of events it covers.
func parseMemoryID(id string) (int, error) {
	if id == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n > uint64(maxInt) {
		return 0, fmt.Errorf("%w: %q is not a non-negative decimal integer", ErrBadEventID, id)
	}
	return int(n), nil
}

const maxInt = int(^uint(0) >> 1)

func lastID(events []Event) string {
	if len(events) == 0 {
		return ""
	}
	return events[len(events)-1].ID
}

// cloneEvent returns a copy of e that shares no memory with it.
func cloneEvent(e Event) Event {
	if e.Step != nil {
		step := *e.Step
		step.Data = cloneRaw(step.Data)
		e.Step = &step
	}
	e.Result = cloneRaw(e.Result)
	return e
}

func cloneEvents(events []Event) []Event {
	out := make([]Event, len(events))
	for i, e := range events {
		out[i] = cloneEvent(e)
	}
	return out
}

func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}
