package queuetest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// runBackend checks the queue.Backend contract, with no Broker or Worker
// in between.
func runBackend(t *testing.T, newBackends func(t *testing.T) (queue.Backend, progress.Backend)) {
	backend := func(t *testing.T) queue.Backend {
		t.Helper()
		b, _ := newBackends(t)
		require.NotNil(t, b)
		return b
	}

	t.Run("FetchLeasesInOrderUpToMax", func(t *testing.T) {
		b := backend(t)
		tasks := []*queue.Task{newTask(), newTask(), newTask()}
		enqueue(t, b, tasks...)

		var got []*queue.Lease
		for len(got) < len(tasks) {
			got = append(got, fetch(t, b, 2, time.Minute)...)
		}
		require.Len(t, got, len(tasks), "more tasks leased than enqueued")
		tokens := map[string]bool{}
		for i, l := range got {
			want := tasks[i]
			require.NotNil(t, l.Task)
			assert.Equal(t, want.ID, l.Task.ID, "lease %d out of order", i)
			assert.Equal(t, want.Flow, l.Task.Flow)
			assert.JSONEq(t, string(want.Inputs), string(l.Task.Inputs))
			assert.Equal(t, want.MaxAttempts, l.Task.MaxAttempts)
			assert.Equal(t, want.Timeout, l.Task.Timeout)
			assert.True(t, want.EnqueuedAt.Equal(l.Task.EnqueuedAt), "EnqueuedAt %v, want %v", l.Task.EnqueuedAt, want.EnqueuedAt)
			assert.Equal(t, 1, l.Task.Attempt, "first lease is attempt 1")
			assert.NotEmpty(t, l.Token)
			assert.False(t, tokens[l.Token], "token %q reused", l.Token)
			tokens[l.Token] = true
			assert.True(t, l.Deadline.After(time.Now()), "deadline %v already passed", l.Deadline)
		}
		requireNothingReady(t, b)
	})

	t.Run("FetchBlocksUntilEnqueue", func(t *testing.T) {
		b := backend(t)
		ctx, cancel := context.WithTimeout(context.Background(), long)
		t.Cleanup(cancel)
		type result struct {
			leases []*queue.Lease
			err    error
		}
		done := make(chan result, 1)
		go func() {
			leases, err := b.Fetch(ctx, "conformance-worker", 5, time.Minute)
			done <- result{leases, err}
		}()
		select {
		case r := <-done:
			require.FailNow(t, "Fetch returned with nothing enqueued", "%d tasks, err %v", len(r.leases), r.err)
		case <-time.After(short):
		}
		task := newTask()
		enqueue(t, b, task)
		select {
		case r := <-done:
			require.NoError(t, r.err)
			require.Len(t, r.leases, 1)
			assert.Equal(t, task.ID, r.leases[0].Task.ID)
		case <-time.After(long):
			require.FailNow(t, "a waiting Fetch did not wake up on Enqueue")
		}
	})

	t.Run("FetchReturnsWhenContextEnds", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ctx  func() (context.Context, context.CancelFunc)
			end  func(cancel context.CancelFunc)
			want error
		}{
			{"cancelled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
				func(cancel context.CancelFunc) { time.Sleep(short); cancel() }, context.Canceled},
			{"deadline", func() (context.Context, context.CancelFunc) { return context.WithTimeout(context.Background(), short) },
				func(context.CancelFunc) {}, context.DeadlineExceeded},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := backend(t)
				ctx, cancel := tc.ctx()
				t.Cleanup(cancel)
				done := make(chan error, 1)
				go func() {
					leases, err := b.Fetch(ctx, "conformance-worker", 1, time.Minute)
					assert.Empty(t, leases)
					done <- err
				}()
				tc.end(cancel)
				select {
				case err := <-done:
					assert.ErrorIs(t, err, tc.want)
				case <-time.After(long):
					require.FailNow(t, "Fetch did not return when its context ended")
				}
			})
		}
	})

	t.Run("DelayedTaskNotFetchedEarly", func(t *testing.T) {
		b := backend(t)
		delayed := newTask()
		delayed.RunAt = time.Now().Add(500 * time.Millisecond)
		now := newTask()
		enqueue(t, b, delayed, now)

		// The task due now is not held up by the one enqueued before it.
		first := fetch(t, b, 10, time.Minute)
		fetched := time.Now()
		require.Equal(t, now.ID, first[0].Task.ID)
		if len(first) == 2 { // the machine was slow enough for RunAt to pass
			require.Equal(t, delayed.ID, first[1].Task.ID)
			assert.False(t, fetched.Before(delayed.RunAt), "task leased before its RunAt")
			return
		}
		require.Len(t, first, 1)

		second := fetchOne(t, b, time.Minute)
		assert.Equal(t, delayed.ID, second.Task.ID)
		assert.False(t, time.Now().Before(delayed.RunAt), "task leased before its RunAt")
		assert.Equal(t, 1, second.Task.Attempt)
	})

	t.Run("ExpiredLeaseIsLeasedAgain", func(t *testing.T) {
		b := backend(t)
		task := newTask()
		enqueue(t, b, task)
		first := fetchOne(t, b, 50*time.Millisecond)
		require.Equal(t, 1, first.Task.Attempt)

		// Nobody extends or acknowledges: a waiting Fetch gets it back
		// once the lease has expired.
		second := fetchOne(t, b, time.Minute)
		assert.Equal(t, task.ID, second.Task.ID)
		assert.Equal(t, 2, second.Task.Attempt, "each lease increments Attempt")
		assert.NotEqual(t, first.Token, second.Token)

		got, err := b.Get(context.Background(), task.ID)
		require.NoError(t, err)
		assert.Equal(t, 2, got.Attempt)
	})

	t.Run("ExtendKeepsLease", func(t *testing.T) {
		b := backend(t)
		task := newTask()
		enqueue(t, b, task)
		const lease = 300 * time.Millisecond
		l := fetchOne(t, b, lease)
		require.NoError(t, b.Extend(context.Background(), l, time.Minute))
		time.Sleep(lease + short) // past the first deadline
		requireNothingReady(t, b)
		require.NoError(t, b.Extend(context.Background(), l, time.Minute), "the lease is still held")
		require.NoError(t, b.Ack(context.Background(), l))
	})

	t.Run("ExtendReportsCancellation", func(t *testing.T) {
		b := backend(t)
		task := newTask()
		enqueue(t, b, task)
		const lease = 300 * time.Millisecond
		l := fetchOne(t, b, lease)
		ctx := context.Background()
		require.NoError(t, b.Extend(ctx, l, time.Minute), "not cancelled yet")
		require.NoError(t, b.Cancel(ctx, task.ID))
		assert.ErrorIs(t, b.Extend(ctx, l, time.Minute), queue.ErrCancelled, "Extend after Cancel")
		time.Sleep(lease + short) // past the first deadline
		requireNothingReady(t, b) // the lease was extended all the same
		assert.ErrorIs(t, b.Extend(ctx, l, time.Minute), queue.ErrCancelled, "every Extend reports it")
		require.NoError(t, b.Ack(ctx, l))
		assert.ErrorIs(t, b.Extend(ctx, l, time.Minute), queue.ErrLeaseLost, "Extend after Ack")
	})

	t.Run("StaleLeaseIsLost", func(t *testing.T) {
		b := backend(t)
		enqueue(t, b, newTask())
		stale := fetchOne(t, b, 50*time.Millisecond)
		current := fetchOne(t, b, time.Minute)
		require.Equal(t, stale.Task.ID, current.Task.ID)

		ctx := context.Background()
		assert.ErrorIs(t, b.Extend(ctx, stale, time.Minute), queue.ErrLeaseLost, "Extend")
		assert.ErrorIs(t, b.Ack(ctx, stale), queue.ErrLeaseLost, "Ack")
		assert.ErrorIs(t, b.Retry(ctx, stale, time.Now(), queue.EndFailed), queue.ErrLeaseLost, "Retry")

		require.NoError(t, b.Extend(ctx, current, time.Minute), "the current lease is unaffected")
		require.NoError(t, b.Ack(ctx, current))
		assert.ErrorIs(t, b.Ack(ctx, current), queue.ErrLeaseLost, "second Ack")
		assert.ErrorIs(t, b.Extend(ctx, current, time.Minute), queue.ErrLeaseLost, "Extend after Ack")
		assert.ErrorIs(t, b.Retry(ctx, current, time.Now(), queue.EndFailed), queue.ErrLeaseLost, "Retry after Ack")
		requireNothingReady(t, b)
	})

	t.Run("CreateAndEnqueueRecordsAndQueues", func(t *testing.T) {
		qb, pb := newBackends(t)
		c, ok := qb.(taskCreator)
		if !ok {
			t.Skip("the backend has no CreateAndEnqueue (optional)")
		}
		ctx := context.Background()
		task := newTask()
		require.NoError(t, c.CreateAndEnqueue(ctx, task))
		snap, _, err := pb.Snapshot(ctx, task.ID)
		require.NoError(t, err, "the progress record exists")
		assert.Equal(t, progress.StatePending, snap.State)
		got, err := qb.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, task.Flow, got.Flow)
		assert.JSONEq(t, string(task.Inputs), string(got.Inputs))
		l := fetchOne(t, qb, time.Minute)
		assert.Equal(t, task.ID, l.Task.ID, "the task is queued")
		require.NoError(t, qb.Ack(ctx, l))
	})

	t.Run("FinisherRecordsAndAcknowledges", func(t *testing.T) {
		qb, pb := newBackends(t)
		f, ok := qb.(finisher)
		if !ok {
			t.Skip("the backend has no AppendAndAck (optional)")
		}
		ctx := context.Background()
		start := func(lease time.Duration) (*queue.Task, *queue.Lease) {
			t.Helper()
			task := newTask()
			require.NoError(t, pb.Create(ctx, task.ID))
			enqueue(t, qb, task)
			l := fetchOne(t, qb, lease)
			require.Equal(t, task.ID, l.Task.ID)
			return task, l
		}
		success := progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"ok"`)}

		// Recorded and acknowledged.
		task, l := start(time.Minute)
		last, acked, err := f.AppendAndAck(ctx, l, progress.LogEvent("almost"), success)
		require.NoError(t, err)
		assert.True(t, acked)
		snap, lastID, err := pb.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, progress.StateSuccess, snap.State)
		assert.Equal(t, lastID, last, "the id of the last event, as Append returns")
		assert.ErrorIs(t, qb.Ack(ctx, l), queue.ErrLeaseLost, "already acknowledged")

		// A task that had ended is acknowledged all the same.
		task, l = start(time.Minute)
		_, err = pb.Append(ctx, task.ID, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "cancelled"})
		require.NoError(t, err)
		_, acked, err = f.AppendAndAck(ctx, l, success)
		assert.ErrorIs(t, err, progress.ErrFinished)
		assert.True(t, acked)
		snap, _, err = pb.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, snap.State, "the first terminal state stands")

		// Events that cannot be recorded acknowledge nothing.
		task, l = start(time.Minute)
		_, acked, err = f.AppendAndAck(ctx, l, success, progress.LogEvent("after the end"))
		assert.ErrorIs(t, err, progress.ErrFinished)
		assert.False(t, acked)
		_, acked, err = f.AppendAndAck(ctx, l, progress.Event{Type: "nonsense"})
		assert.ErrorIs(t, err, progress.ErrInvalidEvent)
		assert.False(t, acked)
		require.NoError(t, qb.Extend(ctx, l, time.Minute), "the lease is still held")
		snap, _, err = pb.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, progress.StatePending, snap.State, "nothing recorded")

		// A stale lease: the events are recorded, the current holder keeps
		// its lease.
		requireNothingReady(t, qb)
		task, stale := start(50 * time.Millisecond)
		current := fetchOne(t, qb, time.Minute)
		require.Equal(t, task.ID, current.Task.ID)
		_, acked, err = f.AppendAndAck(ctx, stale, success)
		require.NoError(t, err)
		assert.False(t, acked, "a lease no longer held is not acknowledged")
		require.NoError(t, qb.Ack(ctx, current), "the current lease is unaffected")
		requireNothingReady(t, qb)
	})

	t.Run("FetchWithStateReadsTheSnapshots", func(t *testing.T) {
		// FetchWithState is optional: a backend that offers it reports
		// each task's state as it was when leased.
		qb, pb := newBackends(t)
		f, ok := qb.(stateFetcher)
		if !ok {
			t.Skip("the backend has no FetchWithState (optional)")
		}
		ctx := context.Background()
		fetchState := func(lease time.Duration) (*queue.Lease, progress.State) {
			t.Helper()
			ctx, cancel := context.WithTimeout(ctx, long)
			defer cancel()
			leases, states, err := f.FetchWithState(ctx, "conformance-worker", 1, lease)
			require.NoError(t, err)
			require.Len(t, leases, 1)
			require.Len(t, states, 1, "one state per lease")
			return leases[0], states[0]
		}
		task := newTask()
		require.NoError(t, pb.Create(ctx, task.ID))
		enqueue(t, qb, task)
		l, state := fetchState(50 * time.Millisecond)
		assert.Equal(t, task.ID, l.Task.ID)
		assert.Equal(t, 1, l.Task.Attempt)
		assert.Equal(t, progress.StatePending, state)
		_, err := pb.Append(ctx, task.ID, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"})
		require.NoError(t, err)
		_, state = fetchState(50 * time.Millisecond) // the first lease passed
		assert.Equal(t, progress.StateProgress, state)
		_, err = pb.Append(ctx, task.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
		require.NoError(t, err)
		l, state = fetchState(time.Minute)
		assert.Equal(t, progress.StateSuccess, state)
		require.NoError(t, qb.Ack(ctx, l))

		other := newTask() // no progress record
		enqueue(t, qb, other)
		_, state = fetchState(time.Minute)
		assert.Empty(t, state, "a task without a progress record")
	})

	t.Run("RetryDelaysTask", func(t *testing.T) {
		b := backend(t)
		task := newTask()
		enqueue(t, b, task)
		ctx := context.Background()

		l := fetchOne(t, b, time.Minute)
		at := time.Now().Add(300 * time.Millisecond)
		require.NoError(t, b.Retry(ctx, l, at, queue.EndFailed))
		assert.ErrorIs(t, b.Ack(ctx, l), queue.ErrLeaseLost, "a lease given back is gone")

		l = fetchOne(t, b, time.Minute)
		assert.Equal(t, task.ID, l.Task.ID)
		assert.False(t, time.Now().Before(at), "task leased before the time given to Retry")
		assert.Equal(t, 2, l.Task.Attempt)

		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndFailed))
		l = fetchOne(t, b, time.Minute)
		assert.Equal(t, task.ID, l.Task.ID, "Retry(now) makes the task ready at once")
		assert.Equal(t, 3, l.Task.Attempt)
	})

	t.Run("RetryQueuesBehindReadyTasks", func(t *testing.T) {
		b := backend(t)
		a, c := newTask(), newTask()
		enqueue(t, b, a)
		l := fetchOne(t, b, time.Minute)
		enqueue(t, b, c)
		require.NoError(t, b.Retry(context.Background(), l, time.Now(), queue.EndFailed))
		var order []string
		for len(order) < 2 {
			for _, l := range fetch(t, b, 2, time.Minute) {
				order = append(order, l.Task.ID)
			}
		}
		assert.Equal(t, []string{c.ID, a.ID}, order, "a task given back goes behind the ready ones")
	})

	t.Run("GetReturnsStoredTask", func(t *testing.T) {
		b := backend(t)
		ctx := context.Background()
		task := newTask()
		task.Owner = "user:ada@example.com 42"
		enqueue(t, b, task)

		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, task.ID, got.ID)
		assert.Equal(t, task.Flow, got.Flow)
		assert.JSONEq(t, string(task.Inputs), string(got.Inputs))
		assert.Equal(t, task.MaxAttempts, got.MaxAttempts)
		assert.Equal(t, task.Timeout, got.Timeout)
		assert.True(t, task.EnqueuedAt.Equal(got.EnqueuedAt))
		assert.Equal(t, 0, got.Attempt)
		assert.False(t, got.Cancelled)
		assert.Equal(t, task.Owner, got.Owner)

		got.Attempt, got.Flow = 42, "changed"
		again, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.Equal(t, 0, again.Attempt, "Get returns a copy")
		assert.Equal(t, task.Flow, again.Flow, "Get returns a copy")

		l := fetchOne(t, b, time.Minute)
		assert.Equal(t, task.Owner, l.Task.Owner, "a lease's task has its owner")
		require.NoError(t, b.Ack(ctx, l))
		got, err = b.Get(ctx, task.ID)
		require.NoError(t, err, "a task stays readable after Ack")
		assert.Equal(t, 1, got.Attempt)
		assert.Equal(t, task.Owner, got.Owner)

		unowned := newTask()
		enqueue(t, b, unowned)
		got, err = b.Get(ctx, unowned.ID)
		require.NoError(t, err)
		assert.Empty(t, got.Owner)
		require.NoError(t, b.Ack(ctx, fetchOne(t, b, time.Minute)))

		_, err = b.Get(ctx, queue.NewID())
		assert.ErrorIs(t, err, queue.ErrNotFound)
	})

	t.Run("TraceContextTravelsWithTheTask", func(t *testing.T) {
		// The W3C trace context is stored as it is, read back by Get and
		// by every lease; a task without one has none.
		qb, pb := newBackends(t)
		ctx := context.Background()
		traced := newTask()
		traced.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		traced.TraceState = "vendor=a b,other=c"
		plain := newTask()
		enqueue(t, qb, traced, plain)
		var created *queue.Task
		if c, ok := qb.(taskCreator); ok {
			created = newTask()
			created.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
			require.NoError(t, c.CreateAndEnqueue(ctx, created))
		}
		for _, want := range []*queue.Task{traced, plain, created} {
			if want == nil {
				continue
			}
			got, err := qb.Get(ctx, want.ID)
			require.NoError(t, err)
			assert.Equal(t, want.TraceParent, got.TraceParent, "Get")
			assert.Equal(t, want.TraceState, got.TraceState, "Get")
		}
		byID := map[string]*queue.Task{traced.ID: traced, plain.ID: plain}
		if created != nil {
			byID[created.ID] = created
			require.NoError(t, pb.Create(ctx, traced.ID))
		}
		for range byID {
			l := fetchOne(t, qb, time.Minute)
			want := byID[l.Task.ID]
			require.NotNil(t, want, "leased an unknown task %s", l.Task.ID)
			assert.Equal(t, want.TraceParent, l.Task.TraceParent, "lease")
			assert.Equal(t, want.TraceState, l.Task.TraceState, "lease")
			require.NoError(t, qb.Ack(ctx, l))
		}
	})

	t.Run("DepthCountsReadyDelayedAndRunning", func(t *testing.T) {
		b := backend(t)
		depth := depthOf(t, b)
		ctx := context.Background()
		assert.Equal(t, queue.Depth{}, depth(), "an empty queue")
		later := newTask()
		later.RunAt = time.Now().Add(time.Hour)
		enqueue(t, b, newTask(), newTask(), newTask(), later)
		assert.Equal(t, queue.Depth{Ready: 3, Delayed: 1}, depth())
		l := fetchOne(t, b, time.Minute)
		assert.Equal(t, queue.Depth{Ready: 2, Delayed: 1, Running: 1}, depth())
		require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndFailed))
		assert.Equal(t, queue.Depth{Ready: 2, Delayed: 2}, depth())
		for range 2 {
			require.NoError(t, b.Ack(ctx, fetchOne(t, b, time.Minute)))
		}
		assert.Equal(t, queue.Depth{Delayed: 2}, depth(), "acknowledged tasks are not counted")
	})

	t.Run("DepthCountsHooksWaitingApart", func(t *testing.T) {
		// A task given back for its finish hooks has ended: it waits to
		// run its hooks again, not its flow, and is not Delayed.
		b := backend(t)
		depth := depthOf(t, b)
		ctx := context.Background()
		soon, later, failed := newTask(), newTask(), newTask()
		enqueue(t, b, soon, later, failed)
		byID := map[string]*queue.Lease{}
		for len(byID) < 3 {
			for _, l := range fetch(t, b, 3, time.Minute) {
				byID[l.Task.ID] = l
			}
		}
		require.NoError(t, b.Retry(ctx, byID[later.ID], time.Now().Add(time.Hour), queue.EndHooksPending))
		require.NoError(t, b.Retry(ctx, byID[failed.ID], time.Now().Add(time.Hour), queue.EndFailed))
		require.NoError(t, b.Retry(ctx, byID[soon.ID], time.Now().Add(short), queue.EndHooksPending))
		assert.Equal(t, queue.Depth{Delayed: 1, HooksWaiting: 2}, depth())
		l := fetchOne(t, b, time.Minute)
		require.Equal(t, soon.ID, l.Task.ID, "the task due soon")
		assert.Equal(t, 1, l.Task.HookRetries)
		assert.Equal(t, queue.Depth{Delayed: 1, HooksWaiting: 1, Running: 1}, depth(), "the lease that runs the hooks is Running")
		require.NoError(t, b.Ack(ctx, l))
		assert.Equal(t, queue.Depth{Delayed: 1, HooksWaiting: 1}, depth())
		// Cancel makes a task delayed for a retry of its flow ready (see
		// Depth.Ready for how a backend counts it then): it waits no
		// longer. One that waits to run its hooks again waits on.
		require.NoError(t, b.Cancel(ctx, failed.ID))
		require.NoError(t, b.Cancel(ctx, later.ID))
		n := depth()
		assert.Equal(t, int64(1), n.HooksWaiting, "cancelled: %+v", n)
		assert.Equal(t, int64(0), n.Delayed, "cancelled: %+v", n)
	})

	t.Run("CancelNotifiesEveryListener", func(t *testing.T) {
		b := backend(t)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		listeners := make([]<-chan string, 2)
		for i := range listeners {
			ch, err := b.Cancellations(ctx)
			require.NoError(t, err)
			listeners[i] = ch
		}
		doomed, spared := newTask(), newTask()
		enqueue(t, b, doomed, spared)
		held := fetch(t, b, 1, time.Minute)[0] // doomed, running somewhere
		require.Equal(t, doomed.ID, held.Task.ID)

		require.NoError(t, b.Cancel(context.Background(), doomed.ID))
		for i, ch := range listeners {
			select {
			case id, ok := <-ch:
				require.True(t, ok, "listener %d closed early", i)
				assert.Equal(t, doomed.ID, id, "listener %d", i)
			case <-time.After(long):
				require.FailNow(t, "cancellation not delivered", "listener %d", i)
			}
		}

		got, err := b.Get(context.Background(), doomed.ID)
		require.NoError(t, err)
		assert.True(t, got.Cancelled)
		got, err = b.Get(context.Background(), spared.ID)
		require.NoError(t, err)
		assert.False(t, got.Cancelled)

		// The flag travels with the task to the next lease.
		require.NoError(t, b.Retry(context.Background(), held, time.Now(), queue.EndFailed))
		var leased []*queue.Lease
		for len(leased) < 2 {
			leased = append(leased, fetch(t, b, 2, time.Minute)...)
		}
		for _, l := range leased {
			assert.Equal(t, l.Task.ID == doomed.ID, l.Task.Cancelled, "task %s", l.Task.ID)
		}

		cancel()
		for i, ch := range listeners {
			eventually(t, func() bool {
				select {
				case _, ok := <-ch:
					return !ok
				default:
					return false
				}
			}, "listener %d not closed after its context ended", i)
		}
	})

	t.Run("CancelMakesDelayedTaskReady", func(t *testing.T) {
		b := backend(t)
		later := newTask()
		later.RunAt = time.Now().Add(time.Hour)
		enqueue(t, b, later)
		retried := newTask()
		enqueue(t, b, retried)
		l := fetchOne(t, b, time.Minute)
		require.NoError(t, b.Retry(context.Background(), l, time.Now().Add(time.Hour), queue.EndFailed))

		require.NoError(t, b.Cancel(context.Background(), later.ID))
		require.NoError(t, b.Cancel(context.Background(), retried.ID))
		got := map[string]bool{}
		for len(got) < 2 {
			for _, l := range fetch(t, b, 2, time.Minute) {
				assert.True(t, l.Task.Cancelled, "task %s", l.Task.ID)
				got[l.Task.ID] = true
			}
		}
		assert.Equal(t, map[string]bool{later.ID: true, retried.ID: true}, got,
			"a cancelled task does not wait out its delay")
	})

	t.Run("RetryOfCancelledTaskIsNotDelayed", func(t *testing.T) {
		b := backend(t)
		task := newTask()
		enqueue(t, b, task)
		l := fetchOne(t, b, time.Minute)
		require.NoError(t, b.Cancel(context.Background(), task.ID))
		require.NoError(t, b.Retry(context.Background(), l, time.Now().Add(time.Hour), queue.EndFailed))
		l = fetchOne(t, b, time.Minute)
		assert.Equal(t, task.ID, l.Task.ID)
		assert.True(t, l.Task.Cancelled)
	})

	t.Run("CancelledTaskWaitsToRunItsHooks", func(t *testing.T) {
		// A task given back for its finish hooks has ended: cancelled
		// or not, it waits for its time (the worker's backoff). Neither
		// a Retry of a cancelled task nor a Cancel makes it ready at
		// once, as they do a task given back for its flow.
		b := backend(t)
		ctx := context.Background()
		before, after := newTask(), newTask()
		enqueue(t, b, before, after)
		byID := map[string]*queue.Lease{}
		for len(byID) < 2 {
			for _, l := range fetch(t, b, 2, time.Minute) {
				byID[l.Task.ID] = l
			}
		}
		require.NoError(t, b.Cancel(ctx, before.ID))
		require.NoError(t, b.Retry(ctx, byID[before.ID], time.Now().Add(time.Hour), queue.EndHooksPending))
		require.NoError(t, b.Retry(ctx, byID[after.ID], time.Now().Add(time.Hour), queue.EndHooksPending))
		require.NoError(t, b.Cancel(ctx, after.ID))
		requireNothingReady(t, b)
		if d, ok := b.(queue.DepthReader); ok {
			n, err := d.Depth(ctx)
			require.NoError(t, err)
			assert.Equal(t, int64(2), n.HooksWaiting, "%+v", n)
		}

		// Once due, it is leased again, cancelled, for its hooks.
		l := leasedAgainCancelled(t, b, queue.EndHooksPending, false)
		assert.Equal(t, 1, l.Task.HookRetries)
		require.NoError(t, b.Ack(ctx, l))
	})

	t.Run("CancelledHandBackWaitsItsTime", func(t *testing.T) {
		// A cancellation pulls forward a retry of the flow only (a why
		// that counts): a task handed back through no fault of its flow
		// (the progress store down, say) waits for the time its worker
		// asked for, cancelled or not, or it would be leased again at
		// once, hand-back after hand-back, while the outage lasts. It
		// waits so whether the cancellation came during the lease that
		// hands it back or before it (the lease carries the flag).
		ends := []queue.AttemptEnd{queue.EndStoreDown, queue.EndShutdown, queue.EndBackendDown, queue.EndHandedBack}
		for _, why := range ends {
			require.False(t, why.Counts(), why)
		}
		for _, known := range []bool{false, true} {
			t.Run(map[bool]string{false: "CancelledDuringTheLease", true: "CancelledBeforeTheLease"}[known], func(t *testing.T) {
				b := backend(t)
				ctx := context.Background()
				byID := map[string]*queue.Lease{}
				whyOf := map[string]queue.AttemptEnd{}
				for _, why := range ends {
					task := newTask()
					enqueue(t, b, task)
					whyOf[task.ID] = why
					if known {
						require.NoError(t, b.Cancel(ctx, task.ID))
					}
				}
				for len(byID) < len(ends) {
					for _, l := range fetch(t, b, len(ends), time.Minute) {
						require.Equal(t, known, l.Task.Cancelled, "task %s", l.Task.ID)
						byID[l.Task.ID] = l
					}
				}
				for id, l := range byID {
					if !known {
						require.NoError(t, b.Cancel(ctx, id))
					}
					require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), whyOf[id]))
				}
				requireNothingReady(t, b)

				// Due, it is leased again, cancelled, with its hand-back.
				l := leasedAgainCancelled(t, b, queue.EndStoreDown, known)
				assert.Equal(t, 1, l.Task.HandBacks)
				assert.Equal(t, queue.EndStoreDown, l.Task.PreviousEnd)
				require.NoError(t, b.Ack(ctx, l))
			})
		}
	})

	t.Run("CancelUnknownTask", func(t *testing.T) {
		b := backend(t)
		err := b.Cancel(context.Background(), queue.NewID())
		assert.ErrorIs(t, err, queue.ErrNotFound)
	})

	t.Run("BuryKeepsTaskInDeadSet", func(t *testing.T) {
		b := backend(t)
		ctx := context.Background()
		first, second, spared := newTask(), newTask(), newTask()
		enqueue(t, b, first, second, spared)
		leases := map[string]*queue.Lease{}
		for len(leases) < 3 {
			for _, l := range fetch(t, b, 3, time.Minute) {
				leases[l.Task.ID] = l
			}
		}
		empty, err := b.Dead(ctx, 0)
		require.NoError(t, err)
		assert.Empty(t, empty, "nothing buried yet")

		before := time.Now().Add(-time.Millisecond)
		require.NoError(t, b.Bury(ctx, leases[first.ID], "model overloaded"))
		time.Sleep(5 * time.Millisecond) // apart on a millisecond clock
		require.NoError(t, b.Bury(ctx, leases[second.ID], "panic: kaboom"))
		require.NoError(t, b.Ack(ctx, leases[spared.ID]))
		after := time.Now().Add(time.Millisecond)

		dead, err := b.Dead(ctx, 0)
		require.NoError(t, err)
		require.Len(t, dead, 2, "acknowledged tasks are not buried")
		assert.Equal(t, second.ID, dead[0].ID, "most recently buried first")
		assert.Equal(t, first.ID, dead[1].ID)
		for i, want := range []struct {
			task   *queue.Task
			reason string
		}{{second, "panic: kaboom"}, {first, "model overloaded"}} {
			d := dead[i]
			assert.Equal(t, want.task.Flow, d.Flow)
			assert.Equal(t, want.reason, d.Reason)
			assert.Equal(t, 1, d.Attempts)
			assert.True(t, !d.BuriedAt.Before(before) && !d.BuriedAt.After(after),
				"BuriedAt %v not within [%v, %v]", d.BuriedAt, before, after)
		}
		limited, err := b.Dead(ctx, 1)
		require.NoError(t, err)
		require.Len(t, limited, 1)
		assert.Equal(t, second.ID, limited[0].ID)

		// Burying is acknowledging: the lease is gone, the task stays
		// readable and is not run again.
		assert.ErrorIs(t, b.Ack(ctx, leases[first.ID]), queue.ErrLeaseLost, "Ack after Bury")
		assert.ErrorIs(t, b.Bury(ctx, leases[first.ID], "again"), queue.ErrLeaseLost, "Bury twice")
		assert.ErrorIs(t, b.Bury(ctx, leases[spared.ID], "late"), queue.ErrLeaseLost, "Bury after Ack")
		got, err := b.Get(ctx, first.ID)
		require.NoError(t, err, "a buried task stays readable")
		assert.Equal(t, 1, got.Attempt)
		requireNothingReady(t, b)
		dead, err = b.Dead(ctx, 0)
		require.NoError(t, err)
		assert.Len(t, dead, 2, "refused Bury calls bury nothing")
	})

	t.Run("BuryStaleLeaseIsRefused", func(t *testing.T) {
		b := backend(t)
		enqueue(t, b, newTask())
		stale := fetchOne(t, b, 50*time.Millisecond)
		current := fetchOne(t, b, time.Minute)
		require.Equal(t, stale.Task.ID, current.Task.ID)
		assert.ErrorIs(t, b.Bury(context.Background(), stale, "lost"), queue.ErrLeaseLost)
		dead, err := b.Dead(context.Background(), 0)
		require.NoError(t, err)
		assert.Empty(t, dead)
		require.NoError(t, b.Bury(context.Background(), current, "failed"))
		dead, err = b.Dead(context.Background(), 0)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, 2, dead[0].Attempts)
	})

	t.Run("RequeueReplacesDeadTask", func(t *testing.T) {
		b := backend(t)
		ctx := context.Background()
		failed, other := newTask(), newTask()
		enqueue(t, b, failed, other)
		for range 2 {
			require.NoError(t, b.Bury(ctx, fetchOne(t, b, time.Minute), "boom"))
		}

		again := newTask()
		again.RequeuedFrom = failed.ID
		require.NoError(t, b.Requeue(ctx, failed.ID, again))
		dead := fetchDead(t, b)
		require.Len(t, dead, 1, "the re-queued task left the dead-letter set")
		assert.Equal(t, other.ID, dead[0].ID)

		l := fetchOne(t, b, time.Minute)
		assert.Equal(t, again.ID, l.Task.ID, "the new task is ready")
		assert.Equal(t, 1, l.Task.Attempt)
		assert.Equal(t, failed.ID, l.Task.RequeuedFrom)
		got, err := b.Get(ctx, again.ID)
		require.NoError(t, err)
		assert.Equal(t, failed.ID, got.RequeuedFrom)
		got, err = b.Get(ctx, failed.ID)
		require.NoError(t, err, "the dead task stays readable")
		assert.Empty(t, got.RequeuedFrom)

		twice := newTask()
		assert.ErrorIs(t, b.Requeue(ctx, failed.ID, twice), queue.ErrNotDead, "re-queued already")
		assert.ErrorIs(t, b.Requeue(ctx, again.ID, twice), queue.ErrNotDead, "a task that never failed")
		assert.ErrorIs(t, b.Requeue(ctx, queue.NewID(), twice), queue.ErrNotDead, "an unknown task")
		_, err = b.Get(ctx, twice.ID)
		assert.ErrorIs(t, err, queue.ErrNotFound, "a refused Requeue enqueues nothing")
		requireNothingReady(t, b)
	})

	t.Run("ConcurrentRequeueRunsOnce", func(t *testing.T) {
		b := backend(t)
		ctx := context.Background()
		failed := newTask()
		enqueue(t, b, failed)
		require.NoError(t, b.Bury(ctx, fetchOne(t, b, time.Minute), "boom"))

		const racers = 5
		errs := make(chan error, racers)
		for range racers {
			go func() { errs <- b.Requeue(ctx, failed.ID, newTask()) }()
		}
		won := 0
		for range racers {
			err := <-errs
			if err == nil {
				won++
				continue
			}
			assert.ErrorIs(t, err, queue.ErrNotDead)
		}
		assert.Equal(t, 1, won, "exactly one Requeue of a dead task succeeds")
		fetchOne(t, b, time.Minute)
		requireNothingReady(t, b)
	})

	t.Run("ManyFetchersShareTheWork", func(t *testing.T) {
		b := backend(t)
		const n = 30
		tasks := make([]*queue.Task, n)
		for i := range tasks {
			tasks[i] = newTask()
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		got := make(chan string, 4*n) // room for duplicates, so that a fetcher never blocks
		const fetchers = 4
		done := make(chan struct{}, fetchers)
		for range fetchers {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					leases, err := b.Fetch(ctx, "conformance-worker", 3, time.Minute)
					if err != nil {
						return
					}
					for _, l := range leases {
						got <- l.Task.ID
						assert.NoError(t, b.Ack(context.Background(), l))
					}
				}
			}()
		}
		enqueue(t, b, tasks...)
		var ids []string
		for len(ids) < n {
			select {
			case id := <-got:
				ids = append(ids, id)
			case <-time.After(long):
				require.FailNow(t, "tasks not all fetched", "%d of %d", len(ids), n)
			}
		}
		cancel()
		for range fetchers {
			<-done
		}
		want := make([]string, n)
		for i, task := range tasks {
			want[i] = task.ID
		}
		slices.Sort(ids)
		slices.Sort(want)
		assert.Equal(t, want, ids, "every task leased exactly once")
	})
}

// fetchDead lists the whole dead-letter set.
func fetchDead(t *testing.T, b queue.Backend) []queue.DeadTask {
	t.Helper()
	dead, err := b.Dead(context.Background(), 0)
	require.NoError(t, err, "Dead")
	return dead
}

// depthOf returns a reader of b's queue depth, skipping t when b has no
// Depth (it is optional).
// leasedAgainCancelled enqueues a task on b (which holds no other ready
// one), leases it, cancels it (before the lease when before is set),
// gives it back with why for a moment, and returns its next lease, which
// it checks is of the task, cancelled.
func leasedAgainCancelled(t *testing.T, b queue.Backend, why queue.AttemptEnd, before bool) *queue.Lease {
	t.Helper()
	ctx := context.Background()
	task := newTask()
	enqueue(t, b, task)
	if before {
		require.NoError(t, b.Cancel(ctx, task.ID))
	}
	l := fetchOne(t, b, time.Minute)
	require.Equal(t, task.ID, l.Task.ID)
	if !before {
		require.NoError(t, b.Cancel(ctx, task.ID))
	}
	require.NoError(t, b.Retry(ctx, l, time.Now().Add(short), why))
	l = fetchOne(t, b, time.Minute)
	require.Equal(t, task.ID, l.Task.ID)
	assert.True(t, l.Task.Cancelled)
	return l
}

func depthOf(t *testing.T, b queue.Backend) func() queue.Depth {
	d, ok := b.(queue.DepthReader)
	if !ok {
		t.Skip("the backend has no Depth (optional)")
	}
	return func() queue.Depth {
		t.Helper()
		n, err := d.Depth(context.Background())
		require.NoError(t, err)
		return n
	}
}
