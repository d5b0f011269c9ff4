package queue_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

func TestBrokerEnqueue(t *testing.T) {
	runAt := time.Now().Add(time.Hour).UTC()
	for _, tc := range []struct {
		name        string
		cfg         queue.BrokerConfig
		inputs      json.RawMessage
		opts        queue.EnqueueOptions
		wantInputs  string
		wantMax     int
		wantTimeout time.Duration
		wantRunAt   time.Time
	}{
		{"defaults", queue.BrokerConfig{}, nil, queue.EnqueueOptions{}, `{}`, queue.DefaultMaxAttempts, queue.DefaultTimeout, time.Time{}},
		{"broker config", queue.BrokerConfig{MaxAttempts: 5, Timeout: time.Minute}, json.RawMessage(`{"a":1}`), queue.EnqueueOptions{}, `{"a":1}`, 5, time.Minute, time.Time{}},
		{"task options win", queue.BrokerConfig{MaxAttempts: 5, Timeout: time.Minute},
			json.RawMessage(`{"a":1}`), queue.EnqueueOptions{MaxAttempts: 1, Timeout: time.Second, RunAt: runAt},
			`{"a":1}`, 1, time.Second, runAt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := queue.NewMemory(queue.MemoryConfig{})
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			tc.cfg.Registry = flowsNamed("poem_flow")
			b := queue.NewBroker(mem, store, tc.cfg)
			ctx := context.Background()
			before := time.Now()
			id, err := b.Enqueue(ctx, "poem_flow", tc.inputs, tc.opts)
			require.NoError(t, err)
			assert.True(t, queue.ValidID(id), "id %q", id)

			snap, _, err := store.Snapshot(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, progress.StatePending, snap.State, "PENDING once Enqueue returns")

			task, err := mem.Get(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, id, task.ID)
			assert.Equal(t, "poem_flow", task.Flow)
			assert.JSONEq(t, tc.wantInputs, string(task.Inputs))
			assert.Equal(t, tc.wantMax, task.MaxAttempts)
			assert.Equal(t, tc.wantTimeout, task.Timeout)
			assert.True(t, tc.wantRunAt.Equal(task.RunAt), "RunAt %v", task.RunAt)
			assert.Zero(t, task.Attempt)
			assert.False(t, task.EnqueuedAt.Before(before.Truncate(time.Second)), "EnqueuedAt %v", task.EnqueuedAt)
		})
	}
}

func TestBrokerEnqueueBackendDown(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryConfig{})
	b := queue.NewBroker(&downBackend{mem}, progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{Registry: flowsNamed("poem_flow")})
	_, err := b.Enqueue(context.Background(), "poem_flow", nil, queue.EnqueueOptions{})
	assert.ErrorIs(t, err, queue.ErrUnavailable)
}

// downBackend refuses every Enqueue as an unreachable backend would.
type downBackend struct{ queue.Backend }

func (downBackend) Enqueue(context.Context, *queue.Task) error { return errConnRefused }

// creatorBackend is a queue backend and progress store in one value that
// counts its CreateAndEnqueue calls.
type creatorBackend struct {
	*queue.Memory
	*progress.MemoryStore
	calls atomic.Int32
}

func (c *creatorBackend) CreateAndEnqueue(ctx context.Context, t *queue.Task) error {
	c.calls.Add(1)
	if err := c.Create(ctx, t.ID); err != nil {
		return err
	}
	return c.Enqueue(ctx, t)
}

func TestBrokerEnqueueInOneStep(t *testing.T) {
	for _, tc := range []struct {
		name      string
		separate  bool // the store is another value
		wantCalls int32
	}{
		{"backend is the store", false, 1},
		{"backend and store differ", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cb := &creatorBackend{Memory: queue.NewMemory(queue.MemoryConfig{}), MemoryStore: progress.NewMemoryStore(progress.MemoryConfig{})}
			var store progress.Store = cb
			if tc.separate {
				store = cb.MemoryStore
			}
			b := queue.NewBroker(cb, store, queue.BrokerConfig{Registry: flowsNamed("poem_flow")})
			ctx := context.Background()
			id, err := b.Enqueue(ctx, "poem_flow", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			assert.Equal(t, tc.wantCalls, cb.calls.Load(), "CreateAndEnqueue calls")
			snap, _, err := cb.Snapshot(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, progress.StatePending, snap.State)
			task, err := cb.Get(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, "poem_flow", task.Flow)
		})
	}
}

// newCreatorBackend is a creatorBackend that also offers
// CreateAndEnqueueNew, and counts its calls apart.
type newCreatorBackend struct {
	*creatorBackend
	newCalls atomic.Int32
}

func (c *newCreatorBackend) CreateAndEnqueueNew(ctx context.Context, t *queue.Task) error {
	c.newCalls.Add(1)
	return c.Enqueue(ctx, t)
}

// TestBrokerEnqueueNewIDUnchecked: a Broker whose backend takes a new id
// as free unchecked (CreateAndEnqueueNew) gives it the tasks whose id the
// Broker drew, and none other: an idempotency key's id may be taken.
func TestBrokerEnqueueNewIDUnchecked(t *testing.T) {
	cb := &newCreatorBackend{creatorBackend: &creatorBackend{Memory: queue.NewMemory(queue.MemoryConfig{}), MemoryStore: progress.NewMemoryStore(progress.MemoryConfig{})}}
	b := queue.NewBroker(cb, nil, queue.BrokerConfig{Registry: flowsNamed("poem_flow")})
	ctx := context.Background()
	id, err := b.Enqueue(ctx, "poem_flow", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(1), cb.newCalls.Load(), "CreateAndEnqueueNew calls")
	assert.Zero(t, cb.calls.Load(), "CreateAndEnqueue calls")
	task, err := cb.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, id, task.ID)

	_, err = b.Enqueue(ctx, "poem_flow", nil, queue.EnqueueOptions{IdempotencyKey: "k"})
	require.NoError(t, err)
	assert.Equal(t, int32(1), cb.newCalls.Load(), "an idempotency key's id is not given to CreateAndEnqueueNew")
}

func TestBrokerCancel(t *testing.T) {
	ctx := context.Background()
	// Each case sets up a queue and a task of its own, so that any one
	// of them runs alone (go test -run 'TestBrokerCancel/cancelled_already').
	newCase := func(t *testing.T) *setup {
		t.Helper()
		s := newSetup()
		s.reg.MustRegister("poem_flow", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
		return s
	}
	pending := func(t *testing.T, s *setup) string {
		t.Helper()
		return s.enqueue(t, "poem_flow", queue.EnqueueOptions{})
	}
	finished := func(t *testing.T, s *setup) string {
		t.Helper()
		id := s.enqueue(t, "poem_flow", queue.EnqueueOptions{})
		_, err := s.store.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"done"`)})
		require.NoError(t, err)
		return id
	}
	cancelledAlready := func(t *testing.T, s *setup) string {
		t.Helper()
		id := pending(t, s)
		require.NoError(t, s.broker.Cancel(ctx, id))
		return id
	}
	isCancelled := func(t *testing.T, s *setup, id string) {
		t.Helper()
		snap, _, err := s.store.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, snap.State)
		assert.Equal(t, queue.StatusCancelled, snap.Details.Status)
		task, err := s.mem.Get(ctx, id)
		require.NoError(t, err)
		assert.True(t, task.Cancelled)
	}
	leftAlone := func(t *testing.T, s *setup, id string) {
		t.Helper()
		snap, _, err := s.store.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State, "a finished task is left alone")
		task, err := s.mem.Get(ctx, id)
		require.NoError(t, err)
		assert.False(t, task.Cancelled)
	}
	fixed := func(id string) func(*testing.T, *setup) string {
		return func(*testing.T, *setup) string { return id }
	}

	for _, tc := range []struct {
		name    string
		task    func(*testing.T, *setup) string
		wantErr []error
		check   func(*testing.T, *setup, string) // nil: nothing to check
	}{
		{"pending", pending, nil, isCancelled},
		{"finished", finished, []error{queue.ErrFinished}, leftAlone},
		{"cancelled already", cancelledAlready, []error{queue.ErrFinished}, isCancelled},
		{"unknown", fixed(queue.NewID()), []error{queue.ErrNotFound}, nil},
		{"bogus id", fixed("../../etc/passwd"), []error{queue.ErrNotFound, queue.ErrInvalidID}, nil},
		{"empty id", fixed(""), []error{queue.ErrNotFound, queue.ErrInvalidID}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newCase(t)
			id := tc.task(t, s)
			err := s.broker.Cancel(ctx, id)
			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
			}
			for _, want := range tc.wantErr {
				assert.ErrorIs(t, err, want)
			}
			if tc.check != nil {
				tc.check(t, s, id)
			}
		})
	}
}

func TestBrokerTask(t *testing.T) {
	ctx := context.Background()
	s := newSetup()
	s.reg.MustRegister("poem_flow", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	id := s.enqueue(t, "poem_flow", queue.EnqueueOptions{})
	last, err := s.store.Append(ctx, id, progress.Event{Type: progress.EventProgress, Progress: 30, Status: "thinking"})
	require.NoError(t, err)

	info, err := s.broker.Task(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, info.Task)
	assert.Equal(t, id, info.Task.ID)
	assert.Equal(t, "poem_flow", info.Task.Flow)
	assert.Equal(t, progress.StateProgress, info.Snapshot.State)
	assert.Equal(t, 30, info.Snapshot.Details.Progress)
	assert.Equal(t, "thinking", info.Snapshot.Details.Status)
	assert.Equal(t, last, info.LastEventID)

	for _, tc := range []struct {
		name    string
		id      string
		wantErr []error
	}{
		{"unknown", queue.NewID(), []error{queue.ErrNotFound}},
		{"bogus id", "a b", []error{queue.ErrNotFound, queue.ErrInvalidID}},
		{"too long", strings.Repeat("a", 65), []error{queue.ErrNotFound, queue.ErrInvalidID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := s.broker.Task(ctx, tc.id)
			assert.Nil(t, info)
			for _, want := range tc.wantErr {
				assert.ErrorIs(t, err, want)
			}
		})
	}
}

// TestBrokerRecord checks that Record returns the queue's record of a
// task (its owner too) and ErrNotFound for an id the queue does not hold.
func TestBrokerRecord(t *testing.T) {
	ctx := context.Background()
	s := newSetup()
	s.reg.MustRegister("poem_flow", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	id := s.enqueue(t, "poem_flow", queue.EnqueueOptions{Owner: "alice"})

	task, err := s.broker.Record(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, id, task.ID)
	assert.Equal(t, "poem_flow", task.Flow)
	assert.Equal(t, "alice", task.Owner)

	for _, tc := range []struct {
		name    string
		id      string
		wantErr []error
	}{
		{"unknown", queue.NewID(), []error{queue.ErrNotFound}},
		{"bogus id", "a b", []error{queue.ErrNotFound, queue.ErrInvalidID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task, err := s.broker.Record(ctx, tc.id)
			assert.Nil(t, task)
			for _, want := range tc.wantErr {
				assert.ErrorIs(t, err, want)
			}
		})
	}
}

func TestBrokerTaskAfterQueueRetention(t *testing.T) {
	ctx := context.Background()
	mem := queue.NewMemory(queue.MemoryConfig{Retention: time.Millisecond})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	b := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: flowsNamed("poem_flow")})
	id, err := b.Enqueue(ctx, "poem_flow", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	leases, err := mem.Fetch(ctx, "w", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, mem.Ack(ctx, leases[0]))
	require.Eventually(t, func() bool {
		_, err := mem.Get(ctx, id)
		return err != nil
	}, waitLong, time.Millisecond)

	info, err := b.Task(ctx, id)
	require.NoError(t, err, "the progress record alone is enough")
	assert.Nil(t, info.Task)
	assert.Equal(t, progress.StatePending, info.Snapshot.State)
}

// memoryPair is an in-memory backend that is also its own progress
// store, as the Redis backend is.
type memoryPair struct {
	*queue.Memory
	*progress.MemoryStore
}

// TestNilStoreMeansTheBackend: a nil store makes the backend the store; a
// backend that is not a progress.Store then fails at construction, with a
// message that says what to pass.
func TestNilStoreMeansTheBackend(t *testing.T) {
	pair := memoryPair{queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})}
	ctx := context.Background()
	id, err := queue.NewBroker(pair, nil, queue.BrokerConfig{Registry: flowsNamed("f")}).Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	snap, _, err := pair.Snapshot(ctx, id)
	require.NoError(t, err, "recorded in the backend, which is the store")
	assert.Equal(t, progress.StatePending, snap.State)

	mem := queue.NewMemory(queue.MemoryConfig{})
	for name, construct := range map[string]func(){
		"NewBroker": func() { queue.NewBroker(mem, nil, queue.BrokerConfig{}) },
		"NewWorker": func() { queue.NewWorker(mem, nil, queue.WorkerConfig{}) },
	} {
		t.Run(name, func(t *testing.T) {
			assert.PanicsWithValue(t,
				"queue: "+name+": nil store, and the backend (*queue.Memory) is not a progress.Store: pass the progress store the tasks are recorded in",
				construct)
		})
	}
	t.Run("nil backend", func(t *testing.T) {
		assert.PanicsWithValue(t, "queue: NewBroker: nil backend", func() { queue.NewBroker(nil, pair, queue.BrokerConfig{}) })
		assert.PanicsWithValue(t, "queue: NewWorker: nil backend", func() { queue.NewWorker(nil, pair, queue.WorkerConfig{}) })
	})
}

// TestWorkerConfigMisuseFailsAtStart: hooks that cannot work make
// NewWorker panic with what is wrong.
func TestWorkerConfigMisuseFailsAtStart(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	ok := func(context.Context, queue.Finished) error { return nil }
	for _, tc := range []struct {
		name string
		cfg  queue.WorkerConfig
		want string
	}{
		{"nil hook", queue.WorkerConfig{OnFinish: []queue.FinishHook{ok, nil}}, "queue: NewWorker: OnFinish[1] is nil"},
		{"hooks outlast the lease", queue.WorkerConfig{Lease: time.Minute, FinishHookTimeout: 31 * time.Second},
			"queue: NewWorker: FinishHookTimeout 31s passes half the Lease (1m0s): the lease would end before the hooks"},
		{"negative concurrency", queue.WorkerConfig{Concurrency: -1}, "queue: NewWorker: WorkerConfig.Concurrency -1 is negative (zero means the default)"},
		{"negative lease", queue.WorkerConfig{Lease: -time.Second}, "queue: NewWorker: WorkerConfig.Lease -1s is negative (zero means the default)"},
		{"negative grace", queue.WorkerConfig{ShutdownGrace: -time.Second}, "queue: NewWorker: WorkerConfig.ShutdownGrace -1s is negative (zero means the default)"},
		{"negative hand-backs", queue.WorkerConfig{MaxHandBacks: -1}, "queue: NewWorker: WorkerConfig.MaxHandBacks -1 is negative (zero means the default)"},
		{"negative abandon", queue.WorkerConfig{AbandonAfter: -time.Second}, "queue: NewWorker: WorkerConfig.AbandonAfter -1s is negative (zero means the default)"},
		{"negative hook timeout", queue.WorkerConfig{FinishHookTimeout: -time.Second}, "queue: NewWorker: WorkerConfig.FinishHookTimeout -1s is negative (zero means the default)"},
		{"negative hook retries", queue.WorkerConfig{MaxHookRetries: -1}, "queue: NewWorker: WorkerConfig.MaxHookRetries -1 is negative (zero means the default)"},
		{"negative heartbeat", queue.WorkerConfig{Heartbeat: -time.Second}, "queue: NewWorker: WorkerConfig.Heartbeat -1s is negative (zero means the default)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tc.want, func() { queue.NewWorker(mem, store, tc.cfg) })
		})
	}
	assert.NotPanics(t, func() {
		queue.NewWorker(mem, store, queue.WorkerConfig{Lease: time.Minute, FinishHookTimeout: 30 * time.Second, OnFinish: []queue.FinishHook{ok}})
	}, "half the lease is allowed")
}

// storeOnly hides every method of a store but those of progress.Store.
type storeOnly struct{ progress.Store }

// TestWaitNeedsALiveFeed: a Broker whose store cannot subscribe says so
// when asked to Wait, and does everything else.
func TestWaitNeedsALiveFeed(t *testing.T) {
	ctx := context.Background()
	b := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), storeOnly{progress.NewMemoryStore(progress.MemoryConfig{})}, queue.BrokerConfig{Registry: flowsNamed("f")})
	id, err := b.Enqueue(ctx, "f", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	info, err := b.Wait(ctx, id)
	assert.ErrorIs(t, err, queue.ErrNoSubscriber)
	assert.Contains(t, err.Error(), "queue_test.storeOnly", "names the store's type")
	assert.Nil(t, info)
}

// TestEnqueueRefusesNegativeOptions: a negative EnqueueOptions.MaxAttempts
// or Timeout can only be a mistake, and a RunAt out of the range a task's
// record holds would be read back as another time; Enqueue refuses them,
// naming the field, and records nothing.
func TestEnqueueRefusesNegativeOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts queue.EnqueueOptions
		want string
	}{
		{"attempts", queue.EnqueueOptions{MaxAttempts: -1}, "EnqueueOptions.MaxAttempts -1"},
		{"timeout", queue.EnqueueOptions{Timeout: -time.Second}, "EnqueueOptions.Timeout -1s"},
		{"run at", queue.EnqueueOptions{RunAt: time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)},
			"EnqueueOptions.RunAt 2500-01-01T00:00:00Z is out of range (1677-09-21T00:12:43Z to 2262-04-11T23:47:16Z)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := queue.NewMemory(queue.MemoryConfig{})
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			b := queue.NewBroker(mem, store, queue.BrokerConfig{Registry: flowsNamed("poem_flow")})
			ctx := context.Background()
			id, err := b.Enqueue(ctx, "poem_flow", nil, tc.opts)
			require.ErrorIs(t, err, queue.ErrInvalidOptions)
			assert.Contains(t, err.Error(), tc.want)
			assert.Empty(t, id)
			d, err := mem.Depth(ctx)
			require.NoError(t, err)
			assert.Zero(t, d, "nothing enqueued")
		})
	}
}

// TestBrokerConfigMisuseFailsAtStart: a negative BrokerConfig.MaxAttempts
// or Timeout makes NewBroker panic, naming the field, as a negative
// CallerLimits field does.
func TestBrokerConfigMisuseFailsAtStart(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryConfig{})
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	for _, tc := range []struct {
		name string
		cfg  queue.BrokerConfig
		want string
	}{
		{"attempts", queue.BrokerConfig{MaxAttempts: -3}, "queue: NewBroker: BrokerConfig.MaxAttempts -3 is negative (zero means DefaultMaxAttempts)"},
		{"timeout", queue.BrokerConfig{Timeout: -time.Minute}, "queue: NewBroker: BrokerConfig.Timeout -1m0s is negative (zero means DefaultTimeout)"},
		{"caller starts", queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: -1}}, "queue: NewBroker: queue: caller limits: Starts -1 is negative (zero: no rate limit)"},
		{"caller pending", queue.BrokerConfig{CallerLimits: queue.CallerLimits{MaxPending: -1}}, "queue: NewBroker: queue: caller limits: MaxPending -1 is negative (zero: no cap)"},
		{"caller per", queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: 5, Per: -time.Second}}, "queue: NewBroker: queue: caller limits: Per -1s is negative (zero means a minute)"},
		// The Redis backend counts in milliseconds: a shorter window
		// would limit nothing there and limit on Memory.
		{"caller per under a millisecond", queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: 5, Per: 500 * time.Microsecond}},
			"queue: NewBroker: queue: caller limits: Per 500µs is under a millisecond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tc.want, func() { queue.NewBroker(mem, store, tc.cfg) })
		})
	}
}
