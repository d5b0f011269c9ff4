package redisbackend_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// A writeRefusal is a state in which Redis refuses writes but answers
// reads: its error reply starts with code, and the backend's error says
// advice.
type writeRefusal struct {
	name, code, advice string
	// refuse makes srv refuse writes, and returns the function that lets
	// them in again.
	refuse func(t *testing.T, srv *redistest.Server) (end func())
}

// writeRefusals: a Redis whose used memory is past its maxmemory, with
// the policy noeviction (the README's advice for a queue), refuses the
// commands that may grow memory (OOM); one with min-replicas-to-write
// set and fewer replicas in sync refuses every write (NOREPLICAS), and so
// does one whose last RDB save failed, with a save point set and
// stop-writes-on-bgsave-error yes, the default (MISCONF), until a save
// succeeds.
var writeRefusals = []writeRefusal{
	{
		name: "out of memory", code: "OOM", advice: "Redis is out of memory (maxmemory)",
		refuse: configRefusal([][]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}}, [][]string{{"maxmemory", "0"}}),
	},
	{
		name: "no replicas", code: "NOREPLICAS", advice: "min-replicas-to-write",
		refuse: configRefusal([][]string{{"min-replicas-to-write", "1"}}, [][]string{{"min-replicas-to-write", "0"}}),
	},
	{
		name: "save failed", code: "MISCONF", advice: "Redis cannot save its snapshot to disk",
		refuse: func(t *testing.T, srv *redistest.Server) func() { return srv.FailSaves(t) },
	},
}

// configRefusal returns the refuse function of a refusal that the CONFIG
// SET arguments on start and off end.
func configRefusal(on, off [][]string) func(*testing.T, *redistest.Server) func() {
	return func(t *testing.T, srv *redistest.Server) func() {
		set := func(args [][]string) {
			for _, a := range args {
				require.NoError(t, srv.Do(append([]string{"CONFIG", "SET"}, a...)...).Error())
			}
		}
		set(on)
		return func() { set(off) }
	}
}

// start makes srv refuse writes, checks that it does, and returns the
// function that lets them in again, which also runs when the test ends.
func (r writeRefusal) start(t *testing.T, srv *redistest.Server) (end func()) {
	t.Helper()
	off := r.refuse(t, srv)
	err := srv.Do("SET", "refusal-probe", "1").Error()
	require.Error(t, err, "Redis takes writes")
	require.True(t, strings.HasPrefix(err.Error(), r.code+" "), "%v", err)
	ended := false
	end = func() {
		if !ended {
			ended = true
			off()
		}
	}
	t.Cleanup(end)
	return end
}

// TestWriteRefusalIsUnsent: while Redis refuses writes for lack of memory
// (OOM), of replicas (NOREPLICAS) or of a disk it can save to (MISCONF),
// each call that writes is refused with an error that wraps
// progress.ErrNotSent and queue.ErrUnavailable (a reporter sends it
// again, start-task answers 503) and says what is wrong, and the refused
// calls did nothing: no task leased, created, cancelled, re-queued or
// ended, no report, checkpoint or heartbeat recorded, the lease they
// would have ended still held. Reads go on. A full Redis takes
// acknowledgements, which free memory; the others refuse them too.
func TestWriteRefusalIsUnsent(t *testing.T) {
	t.Parallel()
	for _, refusal := range writeRefusals {
		t.Run(refusal.name, func(t *testing.T) {
			t.Parallel()
			inBothModes(t, func(t *testing.T, srv *redistest.Server, b *redisbackend.Backend) {
				ctx := context.Background()
				done := runTask(ctx, t, b) // loads the scripts; ends with 4 events
				held := newTask()
				require.NoError(t, b.Create(ctx, held.ID))
				require.NoError(t, b.Enqueue(ctx, held))
				leases, err := b.Fetch(ctx, "w", 1, time.Minute)
				require.NoError(t, err)
				require.Len(t, leases, 1)
				lease := leases[0]
				acked := newTask()
				require.NoError(t, b.CreateAndEnqueue(ctx, acked))
				leases, err = b.Fetch(ctx, "w", 1, time.Minute)
				require.NoError(t, err)
				require.Len(t, leases, 1)
				ackLease := leases[0]
				broker := queue.NewBroker(b, b, queue.BrokerConfig{Registry: flowsNamed("quick", "f")})
				dead := newTask()
				require.NoError(t, b.CreateAndEnqueue(ctx, dead))
				leases, err = b.Fetch(ctx, "w", 1, time.Minute)
				require.NoError(t, err)
				require.Len(t, leases, 1)
				require.NoError(t, b.Bury(ctx, leases[0], "dead"))
				waiting := newTask()
				require.NoError(t, b.CreateAndEnqueue(ctx, waiting))
				created := newTask()
				// A progress record with no task record (a store's Create
				// and Append): a listing finds it in the index and takes
				// it out (see ListTasks), a repair that a Redis refusing
				// writes refuses.
				stale := queue.NewID()
				require.NoError(t, b.Create(ctx, stale))
				_, err = b.Append(ctx, stale, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
				require.NoError(t, err)

				end := refusal.start(t, srv)
				for _, tc := range []struct {
					name string
					op   func() error
				}{
					{"Fetch", func() error {
						got, err := b.Fetch(ctx, "w", 1, time.Minute)
						assert.Empty(t, got)
						return err
					}},
					{"Append", func() error {
						_, err := b.Append(ctx, held.ID, progress.LogEvent("refused"))
						return err
					}},
					{"AppendAndAck", func() error {
						_, _, err := b.AppendAndAck(ctx, lease, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
						return err
					}},
					{"Extend", func() error { return b.Extend(ctx, lease, time.Minute) }},
					{"Retry", func() error { return b.Retry(ctx, lease, time.Now(), queue.EndFailed) }},
					{"Bury", func() error { return b.Bury(ctx, lease, "refused") }},
					{"SaveCheckpoint", func() error {
						return b.SaveCheckpoint(ctx, held.ID, progress.Checkpoint{Key: "step", Attempt: 1, Output: json.RawMessage(`1`)})
					}},
					{"Heartbeat", func() error { return b.Heartbeat(ctx, queue.WorkerInfo{Name: "refused"}) }},
					{"Create", func() error { return b.Create(ctx, created.ID) }},
					{"Enqueue", func() error { return b.Enqueue(ctx, created) }},
					{"CreateAndEnqueue", func() error { return b.CreateAndEnqueue(ctx, created) }},
					{"Broker.Enqueue", func() error {
						_, err := broker.Enqueue(ctx, "quick", nil, queue.EnqueueOptions{})
						return err
					}},
					{"Broker.Enqueue with a key", func() error {
						_, err := broker.Enqueue(ctx, "quick", nil, queue.EnqueueOptions{IdempotencyKey: "refused"})
						return err
					}},
					{"Broker.Cancel", func() error { return broker.Cancel(ctx, waiting.ID) }},
					{"Broker.Requeue", func() error {
						_, err := broker.Requeue(ctx, dead.ID)
						return err
					}},
				} {
					t.Run(tc.name, func(t *testing.T) {
						err := tc.op()
						require.Error(t, err)
						assert.ErrorContains(t, err, refusal.code)
						assert.ErrorContains(t, err, refusal.advice, "the error says what is wrong")
						assert.ErrorIs(t, err, progress.ErrNotSent, "refused unrun: it may be sent again")
						assert.ErrorIs(t, err, queue.ErrUnavailable, "start-task answers 503")
					})
				}
				t.Run("reads", func(t *testing.T) {
					snap, _, err := b.Snapshot(ctx, held.ID)
					require.NoError(t, err)
					assert.Empty(t, snap.Details.StepResults)
					events, err := b.Events(ctx, done.ID, "")
					assert.NoError(t, err)
					assert.Len(t, events, 4, "the events of a task that ended")
					_, err = b.Get(ctx, held.ID)
					assert.NoError(t, err)
					_, err = b.Dead(ctx, 0)
					assert.NoError(t, err)
					page, err := b.ListTasks(ctx, queue.ListOptions{Limit: queue.MaxListLimit})
					assert.NoError(t, err, "a listing whose repair of the index is refused")
					assert.Len(t, page.Tasks, 5, "the tasks, but the one whose index member could not be repaired")
					_, err = b.TaskStats(ctx)
					assert.NoError(t, err)
					_, err = b.Depth(ctx)
					assert.NoError(t, err)
					_, err = b.Workers(ctx)
					assert.NoError(t, err)
				})
				ackErr := b.Ack(ctx, ackLease)
				if refusal.code == "OOM" {
					// ack.lua says allow-oom: it frees memory.
					assert.NoError(t, ackErr, "a full Redis takes an acknowledgement")
				} else {
					assert.ErrorIs(t, ackErr, progress.ErrNotSent, "refused unrun: it may be sent again")
					assert.ErrorContains(t, ackErr, refusal.advice)
				}
				end()
				if refusal.code != "OOM" {
					assert.NoError(t, b.Ack(ctx, ackLease), "the refused acknowledgement left the lease held")
				}

				snap, _, err := b.Snapshot(ctx, held.ID)
				require.NoError(t, err)
				assert.Empty(t, snap.Details.StepResults, "the refused appends recorded nothing")
				assert.False(t, snap.State.Terminal(), "the refused ends recorded nothing")
				checkpoints, err := b.Checkpoints(ctx, held.ID)
				require.NoError(t, err)
				assert.Empty(t, checkpoints, "the refused checkpoint recorded nothing")
				workers, err := b.Workers(ctx)
				require.NoError(t, err)
				for _, w := range workers {
					assert.NotEqual(t, "refused", w.Name, "the refused heartbeat recorded nothing")
				}
				_, err = b.Get(ctx, created.ID)
				assert.ErrorIs(t, err, queue.ErrNotFound, "the refused starts created nothing")
				page, err := b.ListTasks(ctx, queue.ListOptions{Limit: queue.MaxListLimit})
				require.NoError(t, err)
				assert.Len(t, page.Tasks, 5, "the tasks made before, no other: %v", page.Tasks)
				got, err := b.Get(ctx, waiting.ID)
				require.NoError(t, err)
				assert.False(t, got.Cancelled, "the refused cancel recorded nothing")
				deadTasks, err := b.Dead(ctx, 0)
				require.NoError(t, err)
				require.Len(t, deadTasks, 1, "the refused re-queue left the dead task")
				assert.Equal(t, dead.ID, deadTasks[0].ID)
				require.NoError(t, b.Extend(ctx, lease, time.Minute), "the refused calls left the lease held")
				leases, err = b.Fetch(ctx, "w", 2, time.Minute)
				require.NoError(t, err)
				require.Len(t, leases, 1, "the refused fetch leased nothing")
				assert.Equal(t, waiting.ID, leases[0].Task.ID)
				assert.Equal(t, 1, leases[0].Task.Attempt, "its first lease")
				assert.NoError(t, b.Ack(ctx, lease))
			})
		})
	}
}

// TestReportAndEndWhileWritesRefusedRecordedOnce: a flow reports and ends
// while Redis refuses writes (out of memory, replicas missing, or its
// last save failed). Its report and its end are refused, sent again by
// the worker's reporter once writes are taken again (memory freed, a
// replica back, a save that succeeds), and recorded once (see
// testReportAndEndRecordedOnce).
func TestReportAndEndWhileWritesRefusedRecordedOnce(t *testing.T) {
	t.Parallel()
	for _, refusal := range writeRefusals {
		t.Run(refusal.name, func(t *testing.T) {
			t.Parallel()
			testReportAndEndRecordedOnce(t, refusal.start)
		})
	}
}
