// Package progresstest is the conformance suite of progress.Backend: every
// implementation (the in-memory one, the Redis one, one of your own) runs
// the same tests, so that they all keep the promises of progress.Store and
// progress.Subscriber the same way.
//
// Use it from a test of the implementation:
//
//	func TestConformance(t *testing.T) {
//		progresstest.Run(t, func(t *testing.T) progress.Backend {
//			return mystore.New(...)
//		})
//	}
//
// The suite treats event ids as opaque strings: it compares them only for
// equality and orders events by their position in Store.Events, so it makes
// no assumption about the form an implementation gives its ids.
package progresstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

// waitLimit bounds every wait of the suite, so that a broken implementation
// fails a test instead of hanging it. It is a guard, not a measurement.
const waitLimit = 30 * time.Second

// Run runs the conformance suite against the backends newBackend returns.
// newBackend is called once per subtest, with the subtest's t; it may return
// a fresh backend each time or share one (the suite uses a new random task
// id in every test), and should register its own cleanup with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) progress.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b progress.Backend)
	}{
		{"CreateExistsNotFound", testCreate},
		{"AppendAssignsOrderedIDs", testAppendIDs},
		{"SnapshotFold", testSnapshotFold},
		{"SnapshotTimes", testSnapshotTimes},
		{"HeadAgreesWithSnapshot", testHead},
		{"RandomBatchesFoldLikeApply", testRandomFold},
		{"ResultsAreCopies", testCopies},
		{"OneTerminalState", testOneTerminal},
		{"RacingTerminalAppends", testRacingTerminal},
		{"InvalidEventsRefused", testInvalidEvents},
		{"EventsAfter", testEventsAfter},
		{"SubscribeBacklogThenLive", testSubscribeBacklogThenLive},
		{"SubscribeResumeFromEveryID", testSubscribeResume},
		{"SubscribeAfterTerminal", testSubscribeAfterTerminal},
		{"SubscribeErrors", testSubscribeErrors},
		{"SubscribeCancel", testSubscribeCancel},
		{"SlowSubscriberLosesNothing", testSlowSubscriber},
		{"ManySubscribers", testManySubscribers},
		{"ConcurrentAppenders", testConcurrentAppenders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t)
			require.NotNil(t, b, "newBackend returned nil")
			tt.fn(t, b)
		})
	}
}

// newTaskID returns a task id no other test uses, valid for every store
// (letters, digits and '-').
func newTaskID(t *testing.T) string {
	t.Helper()
	var b [8]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "conformance-" + hex.EncodeToString(b[:])
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// createTask creates a new task in b and returns its id.
func createTask(ctx context.Context, t *testing.T, b progress.Backend) string {
	t.Helper()
	id := newTaskID(t)
	require.NoError(t, b.Create(ctx, id))
	return id
}

func statusEvent(msg string) progress.Event {
	return progress.Event{Type: progress.EventStatus, Status: msg}
}

func successEvent(result string) progress.Event {
	return progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "Completed", Result: json.RawMessage(result)}
}

func failureEvent(reason string) progress.Event {
	return progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: reason}
}

// appendOne appends e and returns its id.
func appendOne(ctx context.Context, t *testing.T, b progress.Backend, taskID string, e progress.Event) string {
	t.Helper()
	id, err := b.Append(ctx, taskID, e)
	require.NoError(t, err)
	require.NotEmpty(t, id, "Append returned an empty id")
	return id
}

// allEvents returns every event of the task.
func allEvents(ctx context.Context, t *testing.T, b progress.Backend, taskID string) []progress.Event {
	t.Helper()
	events, err := b.Events(ctx, taskID, "")
	require.NoError(t, err)
	return events
}

func ids(events []progress.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// contentJSON is the JSON of events without their ids, for comparing what
// was appended with what is stored: JSON, because a store that encodes
// events may give back an equivalent but not identical Go value.
func contentJSON(t *testing.T, events []progress.Event) string {
	t.Helper()
	stripped := make([]progress.Event, len(events))
	for i, e := range events {
		e.ID, e.At = "", time.Time{}
		stripped[i] = e
	}
	b, err := json.Marshal(stripped)
	require.NoError(t, err)
	return string(b)
}

func assertSameContent(t *testing.T, want, got []progress.Event, msgAndArgs ...any) {
	t.Helper()
	assert.JSONEq(t, contentJSON(t, want), contentJSON(t, got), msgAndArgs...)
}

// snapshotJSON is the JSON of s without its times, which the store sets
// (see testSnapshotTimes).
func snapshotJSON(t *testing.T, s progress.Snapshot) string {
	t.Helper()
	s = s.Clone()
	s.UpdatedAt, s.StartedAt, s.EndedAt = time.Time{}, time.Time{}, time.Time{}
	for i := range s.Details.StepResults {
		s.Details.StepResults[i].At = time.Time{}
	}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return string(b)
}

func assertSnapshot(t *testing.T, want, got progress.Snapshot, msgAndArgs ...any) {
	t.Helper()
	assert.JSONEq(t, snapshotJSON(t, want), snapshotJSON(t, got), msgAndArgs...)
}

// requireUnique checks that no two events share an id and that none is
// empty.
func requireUnique(t *testing.T, events []progress.Event) {
	t.Helper()
	seen := make(map[string]int, len(events))
	for i, e := range events {
		require.NotEmpty(t, e.ID, "event %d has no id", i)
		if j, ok := seen[e.ID]; ok {
			require.Failf(t, "duplicate event id", "events %d and %d share id %q", j, i, e.ID)
		}
		seen[e.ID] = i
	}
}

// collect reads ch until it is closed and returns what it got. It fails the
// test if the channel stays open past waitLimit.
func collect(t *testing.T, ch <-chan progress.Event) []progress.Event {
	t.Helper()
	var got []progress.Event
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, e)
		case <-timeout.C:
			require.Failf(t, "subscription did not end", "got %d events, channel still open", len(got))
		}
	}
}

// receive reads exactly n events from ch.
func receive(t *testing.T, ch <-chan progress.Event, n int) []progress.Event {
	t.Helper()
	got := make([]progress.Event, 0, n)
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for len(got) < n {
		select {
		case e, ok := <-ch:
			require.Truef(t, ok, "channel closed after %d of %d events", len(got), n)
			got = append(got, e)
		case <-timeout.C:
			require.Failf(t, "events did not arrive", "got %d of %d", len(got), n)
		}
	}
	return got
}

func testCreate(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)

	err := b.Create(ctx, id)
	assert.ErrorIs(t, err, progress.ErrExists, "second Create of the same id")

	snap, last, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assertSnapshot(t, progress.NewSnapshot(), snap, "a new task is PENDING with nothing reported")
	assert.Empty(t, last, "a new task has no last event id")

	events, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	assert.Empty(t, events)

	unknown := newTaskID(t)
	t.Run("unknown task", func(t *testing.T) {
		_, err := b.Append(ctx, unknown, statusEvent("x"))
		assert.ErrorIs(t, err, progress.ErrNotFound, "Append")
		_, _, err = b.Snapshot(ctx, unknown)
		assert.ErrorIs(t, err, progress.ErrNotFound, "Snapshot")
		_, err = b.Events(ctx, unknown, "")
		assert.ErrorIs(t, err, progress.ErrNotFound, "Events")
		ch, err := b.Subscribe(ctx, unknown, "")
		assert.ErrorIs(t, err, progress.ErrNotFound, "Subscribe")
		assert.Nil(t, ch, "Subscribe returned a channel with its error")
	})
}

func testAppendIDs(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)

	var appended []progress.Event
	var returned []string
	// One at a time, then in batches, then one again.
	for i := range 3 {
		e := statusEvent(fmt.Sprintf("single %d", i))
		returned = append(returned, appendOne(ctx, t, b, id, e))
		appended = append(appended, e)
	}
	for i := range 3 {
		batch := []progress.Event{
			{Type: progress.EventProgress, Progress: 10 * i, Status: fmt.Sprintf("batch %d", i)},
			progress.LogEvent(fmt.Sprintf("batch %d log", i)),
			{Type: progress.EventToken, Token: fmt.Sprintf("tok%d ", i)},
		}
		last, err := b.Append(ctx, id, batch...)
		require.NoError(t, err)
		returned = append(returned, last)
		appended = append(appended, batch...)
	}
	e := progress.ToolResultEvent("search", "web", map[string]any{"hits": 3})
	returned = append(returned, appendOne(ctx, t, b, id, e))
	appended = append(appended, e)

	events := allEvents(ctx, t, b, id)
	require.Len(t, events, len(appended))
	requireUnique(t, events)
	assertSameContent(t, appended, events, "Events returns what was appended, in order")

	// Each returned id is the id of the last event of its call.
	wantReturned := []string{events[0].ID, events[1].ID, events[2].ID, events[5].ID, events[8].ID, events[11].ID, events[12].ID}
	assert.Equal(t, wantReturned, returned, "Append returns the id of the last event it appended")

	_, last, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, events[len(events)-1].ID, last, "Snapshot's last id")

	// Ids are ordered: the events after each id are exactly the suffix.
	for i, e := range events {
		after, err := b.Events(ctx, id, e.ID)
		require.NoError(t, err)
		assert.Equal(t, ids(events[i+1:]), ids(after), "Events after event %d", i)
	}
}

func testSnapshotFold(t *testing.T, b progress.Backend) {
	tool := progress.ToolResultEvent("research", "web_search", json.RawMessage(`{"results":["a","b"]}`))
	tests := []struct {
		name   string
		events []progress.Event
		want   func(s *progress.Snapshot)
	}{
		{
			name:   "status moves a pending task to PROGRESS",
			events: []progress.Event{statusEvent("thinking")},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Status = "thinking"
			},
		},
		{
			name: "start sets state and status",
			events: []progress.Event{
				{Type: progress.EventState, State: progress.StateProgress, Status: "Started"},
			},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Status = "Started"
			},
		},
		{
			name: "progress sets percent and, when given, the status",
			events: []progress.Event{
				{Type: progress.EventProgress, Progress: 30, Status: "a third"},
				{Type: progress.EventProgress, Progress: 60},
			},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Status = "a third"
				s.Details.Progress = 60
			},
		},
		{
			name: "progress bounds are kept",
			events: []progress.Event{
				{Type: progress.EventProgress, Progress: 100},
				{Type: progress.EventProgress, Progress: 0},
			},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.Progress = 0
			},
		},
		{
			name:   "steps are appended in order",
			events: []progress.Event{progress.LogEvent("one"), tool, progress.LogEvent("two")},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateProgress
				s.Details.StepResults = []progress.StepResult{
					{Type: progress.StepLog, Message: "one"},
					{Type: progress.StepToolResult, StepName: "research", Tool: "web_search", Data: json.RawMessage(`{"results":["a","b"]}`)},
					{Type: progress.StepLog, Message: "two"},
				}
			},
		},
		{
			name:   "tokens do not change the snapshot",
			events: []progress.Event{{Type: progress.EventToken, Token: "Hel"}, {Type: progress.EventToken, Token: "lo"}},
			want:   func(*progress.Snapshot) {},
		},
		{
			name: "success sets progress 100 and the final result",
			events: []progress.Event{
				{Type: progress.EventProgress, Progress: 40, Status: "writing"},
				progress.LogEvent("draft"),
				successEvent(`{"poem":"roses"}`),
			},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateSuccess
				s.Details.Status = "Completed"
				s.Details.Progress = 100
				s.Details.StepResults = []progress.StepResult{{Type: progress.StepLog, Message: "draft"}}
				s.Details.FinalResult = json.RawMessage(`{"poem":"roses"}`)
			},
		},
		{
			name: "failure keeps progress and carries the reason",
			events: []progress.Event{
				{Type: progress.EventProgress, Progress: 40, Status: "writing"},
				failureEvent("model unavailable"),
			},
			want: func(s *progress.Snapshot) {
				s.State = progress.StateFailure
				s.Details.Status = "model unavailable"
				s.Details.Progress = 40
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			id := createTask(ctx, t, b)
			for _, e := range tt.events {
				appendOne(ctx, t, b, id, e)
			}
			want := progress.NewSnapshot()
			tt.want(&want)

			snap, last, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			assertSnapshot(t, want, snap)

			// The same events in one batch give the same snapshot.
			batched := createTask(ctx, t, b)
			_, err = b.Append(ctx, batched, tt.events...)
			require.NoError(t, err)
			snap2, _, err := b.Snapshot(ctx, batched)
			require.NoError(t, err)
			assertSnapshot(t, want, snap2, "same events appended in one call")

			// The snapshot is the fold of the log, up to its last id.
			events := allEvents(ctx, t, b, id)
			require.NotEmpty(t, events)
			assert.Equal(t, events[len(events)-1].ID, last)
			folded := progress.NewSnapshot()
			for _, e := range events {
				folded.Apply(e)
			}
			assertSnapshot(t, folded, snap, "snapshot is the fold of Events")
		})
	}
}

// testRandomFold appends random sequences of events, in random batches,
// and checks that each snapshot is what Snapshot.Apply makes of them, and
// that the log holds every event. The seed is fixed, so a failure repeats.
func testRandomFold(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	rng := mrand.New(mrand.NewPCG(1, 2))
	states := []progress.State{progress.StatePending, progress.StateProgress}
	statuses := []string{"", "thinking", "searching", ""}
	randomEvent := func() progress.Event {
		switch rng.IntN(6) {
		case 0:
			return progress.Event{Type: progress.EventState, State: states[rng.IntN(2)], Status: statuses[rng.IntN(4)]}
		case 1:
			return progress.Event{Type: progress.EventStatus, Status: statuses[rng.IntN(4)]}
		case 2:
			return progress.Event{Type: progress.EventProgress, Progress: rng.IntN(101), Status: statuses[rng.IntN(4)]}
		case 3:
			return progress.LogEvent(fmt.Sprintf("log %d", rng.IntN(100)))
		case 4:
			return progress.ToolResultEvent("step", "tool", json.RawMessage(fmt.Sprintf(`{"n":%d}`, rng.IntN(100))))
		default:
			return progress.Event{Type: progress.EventToken, Token: "tok"}
		}
	}
	for range 40 {
		id := createTask(ctx, t, b)
		events := make([]progress.Event, rng.IntN(12))
		for i := range events {
			events[i] = randomEvent()
		}
		switch rng.IntN(3) {
		case 0:
			events = append(events, successEvent(`{"ok":true}`))
		case 1:
			events = append(events, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: statuses[rng.IntN(4)]})
		}
		want := progress.NewSnapshot()
		for len(events) > 0 {
			n := 1 + rng.IntN(len(events))
			_, err := b.Append(ctx, id, events[:n]...)
			require.NoError(t, err)
			for _, e := range events[:n] {
				want.Apply(e)
			}
			events = events[n:]
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			assertSnapshot(t, want, snap, "after a batch")
		}
		folded := progress.NewSnapshot()
		for _, e := range allEvents(ctx, t, b, id) {
			folded.Apply(e)
		}
		assertSnapshot(t, want, folded, "the log holds every event")
	}
}

func testCopies(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	step := progress.ToolResultEvent("s", "tool", json.RawMessage(`{"k":"v"}`))
	appendOne(ctx, t, b, id, step)
	step.Step.Message = "changed by the caller after Append"
	step.Step.Data[2] = 'X'
	appendOne(ctx, t, b, id, successEvent(`{"r":1}`))

	before, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	want := snapshotJSON(t, before)
	require.Len(t, before.Details.StepResults, 1)
	assert.JSONEq(t, `{"k":"v"}`, string(before.Details.StepResults[0].Data), "store kept the caller's event")

	before.Details.StepResults[0].Message = "mutated"
	before.Details.StepResults[0].Data[2] = 'Y'
	before.Details.FinalResult[2] = 'Z'
	before.Details.StepResults = append(before.Details.StepResults, progress.StepResult{Type: progress.StepLog})

	events := allEvents(ctx, t, b, id)
	require.Len(t, events, 2)
	wantEvents := contentJSON(t, events)
	events[0].Step.Message = "mutated"
	events[0].Step.Data[2] = 'Y'
	events[1].Result[2] = 'Z'

	after, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.JSONEq(t, want, snapshotJSON(t, after), "mutating a returned snapshot or event changed the store")
	assert.JSONEq(t, wantEvents, contentJSON(t, allEvents(ctx, t, b, id)), "mutating returned events changed the store")
}

func testOneTerminal(t *testing.T, b progress.Backend) {
	terminals := []struct {
		name string
		e    progress.Event
	}{
		{"after success", successEvent(`"done"`)},
		{"after failure", failureEvent("boom")},
	}
	later := []struct {
		name   string
		events []progress.Event
	}{
		{"status", []progress.Event{statusEvent("late")}},
		{"token", []progress.Event{{Type: progress.EventToken, Token: "late"}}},
		{"success", []progress.Event{successEvent(`"again"`)}},
		{"failure", []progress.Event{failureEvent("again")}},
		{"batch", []progress.Event{progress.LogEvent("late"), successEvent(`"again"`)}},
	}
	for _, term := range terminals {
		t.Run(term.name, func(t *testing.T) {
			ctx := testContext(t)
			id := createTask(ctx, t, b)
			appendOne(ctx, t, b, id, progress.LogEvent("working"))
			last := appendOne(ctx, t, b, id, term.e)
			snap, _, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			events := allEvents(ctx, t, b, id)

			for _, l := range later {
				_, err := b.Append(ctx, id, l.events...)
				assert.ErrorIs(t, err, progress.ErrFinished, "appending %s", l.name)
			}
			after, afterLast, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			assertSnapshot(t, snap, after, "snapshot changed after the terminal state")
			assert.Equal(t, last, afterLast)
			assert.Equal(t, ids(events), ids(allEvents(ctx, t, b, id)), "events recorded after the terminal state")
		})
	}

	t.Run("event after a terminal one in the same batch", func(t *testing.T) {
		ctx := testContext(t)
		id := createTask(ctx, t, b)
		appendOne(ctx, t, b, id, progress.LogEvent("working"))
		snap, last, err := b.Snapshot(ctx, id)
		require.NoError(t, err)

		_, err = b.Append(ctx, id, progress.LogEvent("before"), successEvent(`"x"`), progress.LogEvent("after"))
		assert.ErrorIs(t, err, progress.ErrFinished)

		after, afterLast, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assertSnapshot(t, snap, after, "a refused batch changed the snapshot")
		assert.Equal(t, last, afterLast)
		assert.Len(t, allEvents(ctx, t, b, id), 1, "a refused batch recorded events")

		// The task is still open: a batch ending on its terminal event works.
		_, err = b.Append(ctx, id, progress.LogEvent("before"), failureEvent("stopped"))
		require.NoError(t, err)
		final, _, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, progress.StateFailure, final.State)
	})
}

func testRacingTerminal(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})

	const racers = 16
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		errs   = make([]error, racers)
		events = make([]progress.Event, racers)
	)
	for i := range racers {
		if i%2 == 0 {
			events[i] = successEvent(fmt.Sprintf(`"winner %d"`, i))
		} else {
			events[i] = failureEvent(fmt.Sprintf("winner %d", i))
		}
		wg.Go(func() {
			<-start
			_, errs[i] = b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("racer %d", i)), events[i])
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		if err == nil {
			assert.Equal(t, -1, winner, "racers %d and %d both recorded a terminal state", winner, i)
			winner = i
			continue
		}
		assert.ErrorIs(t, err, progress.ErrFinished, "racer %d", i)
	}
	require.NotEqual(t, -1, winner, "no racer recorded a terminal state")

	stored := allEvents(ctx, t, b, id)
	terminal := 0
	for _, e := range stored {
		if e.Terminal() {
			terminal++
		}
	}
	assert.Equal(t, 1, terminal, "terminal events in the log")
	require.Len(t, stored, 3, "start, then the winner's log and terminal events only")
	assertSameContent(t, []progress.Event{progress.LogEvent(fmt.Sprintf("racer %d", winner)), events[winner]}, stored[1:])

	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, events[winner].State, snap.State)
}

func testInvalidEvents(t *testing.T, b progress.Backend) {
	tests := []struct {
		name   string
		events []progress.Event
	}{
		{"unknown type", []progress.Event{{Type: "bogus"}}},
		{"empty type", []progress.Event{{}}},
		{"unknown state", []progress.Event{{Type: progress.EventState, State: "DONE"}}},
		{"progress below 0", []progress.Event{{Type: progress.EventProgress, Progress: -1}}},
		{"progress above 100", []progress.Event{{Type: progress.EventProgress, Progress: 101}}},
		{"step without a step", []progress.Event{{Type: progress.EventStep}}},
		{"result that is not JSON", []progress.Event{{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`{`)}}},
		{"step data that is not JSON", []progress.Event{{Type: progress.EventStep, Step: &progress.StepResult{Type: progress.StepToolResult, Data: json.RawMessage(`nope`)}}}},
		{"valid events before an invalid one", []progress.Event{statusEvent("ok"), progress.LogEvent("ok"), {Type: "bogus"}}},
		{"invalid event before a terminal one", []progress.Event{{Type: "bogus"}, successEvent(`"x"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			id := createTask(ctx, t, b)
			appendOne(ctx, t, b, id, progress.LogEvent("first"))
			snap, last, err := b.Snapshot(ctx, id)
			require.NoError(t, err)

			_, err = b.Append(ctx, id, tt.events...)
			assert.ErrorIs(t, err, progress.ErrInvalidEvent)

			after, afterLast, err := b.Snapshot(ctx, id)
			require.NoError(t, err)
			assertSnapshot(t, snap, after, "a refused append changed the snapshot")
			assert.Equal(t, last, afterLast)
			assert.Len(t, allEvents(ctx, t, b, id), 1, "a refused append recorded events")
		})
	}
}

// malformedIDs are strings no store can have issued as an event id.
var malformedIDs = []string{"bogus", "-1", "1.5", "not an id", "x-1"}

func testEventsAfter(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	var appended []progress.Event
	for i := range 5 {
		e := statusEvent(fmt.Sprintf("step %d", i))
		appendOne(ctx, t, b, id, e)
		appended = append(appended, e)
	}
	// Then three events in one Append.
	batch := []progress.Event{statusEvent("batch 0"), progress.LogEvent("batch 1"), statusEvent("batch 2")}
	_, err := b.Append(ctx, id, batch...)
	require.NoError(t, err)
	appended = append(appended, batch...)
	events := allEvents(ctx, t, b, id)
	require.Len(t, events, 8)

	t.Run("from the start", func(t *testing.T) {
		assertSameContent(t, appended, events)
	})
	for _, i := range []int{1, 4, 5, 6} { // 5 and 6 are inside the batch
		t.Run(fmt.Sprintf("after id %d", i), func(t *testing.T) {
			got, err := b.Events(ctx, id, events[i].ID)
			require.NoError(t, err)
			assert.Equal(t, ids(events[i+1:]), ids(got))
			assertSameContent(t, appended[i+1:], got)
		})
	}
	t.Run("after the last id", func(t *testing.T) {
		got, err := b.Events(ctx, id, events[7].ID)
		require.NoError(t, err)
		assert.Empty(t, got)
	})
	for _, bad := range malformedIDs {
		t.Run("malformed id "+bad, func(t *testing.T) {
			_, err := b.Events(ctx, id, bad)
			assert.ErrorIs(t, err, progress.ErrBadEventID)
		})
	}
}

func testSubscribeBacklogThenLive(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	for i := range 5 {
		appendOne(ctx, t, b, id, statusEvent(fmt.Sprintf("backlog %d", i)))
	}
	ch, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	backlog := receive(t, ch, 5)

	// Live events, each appended after the previous one was delivered.
	for i := range 5 {
		appendOne(ctx, t, b, id, progress.LogEvent(fmt.Sprintf("live %d", i)))
		receive(t, ch, 1)
	}
	appendOne(ctx, t, b, id, progress.Event{Type: progress.EventToken, Token: "tok"})
	appendOne(ctx, t, b, id, successEvent(`"done"`))
	rest := collect(t, ch)

	events := allEvents(ctx, t, b, id)
	require.Len(t, events, 12)
	assert.Equal(t, ids(events[:5]), ids(backlog))
	require.Len(t, rest, 2, "token and terminal event, then the channel closes")
	assert.Equal(t, ids(events[10:]), ids(rest))
	assert.True(t, rest[1].Terminal())
}

// subscribeAndCollect subscribes to taskID after afterID and collects the
// events in the background; the returned function waits for the channel to
// close and returns what it got.
func subscribeAndCollect(ctx context.Context, t *testing.T, b progress.Backend, taskID, afterID string) func() []progress.Event {
	t.Helper()
	ch, err := b.Subscribe(ctx, taskID, afterID)
	require.NoError(t, err)
	var got []progress.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range ch {
			got = append(got, e)
		}
	}()
	return func() []progress.Event {
		t.Helper()
		select {
		case <-done:
		case <-time.After(waitLimit):
			require.Fail(t, "subscription did not end")
		}
		return got
	}
}

func testSubscribeResume(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	// Appends of one and of several events, so that some resume points
	// are inside one Append's events.
	const before, later = 6, 6
	appendMany := func(events ...progress.Event) {
		t.Helper()
		_, err := b.Append(ctx, id, events...)
		require.NoError(t, err)
	}
	appendMany(statusEvent("before 0"))
	appendMany(statusEvent("before 1"), statusEvent("before 2"), statusEvent("before 3"))
	appendMany(statusEvent("before 4"), statusEvent("before 5"))
	head := allEvents(ctx, t, b, id)
	require.Len(t, head, before)

	// A subscriber at every position of the log so far, then more events.
	afterIDs := append([]string{""}, ids(head)...)
	waits := make([]func() []progress.Event, len(afterIDs))
	for i, after := range afterIDs {
		waits[i] = subscribeAndCollect(ctx, t, b, id, after)
	}
	appendMany(progress.LogEvent("later 0"), progress.LogEvent("later 1"))
	appendMany(progress.LogEvent("later 2"))
	appendMany(progress.LogEvent("later 3"), progress.LogEvent("later 4"), successEvent(`"done"`))

	events := allEvents(ctx, t, b, id)
	require.Len(t, events, before+later)
	for i, wait := range waits {
		assert.Equal(t, ids(events[i:]), ids(wait()), "live subscriber after %q", afterIDs[i])
	}

	// The same on the finished task: every resume point gets the suffix,
	// and the channel closes after the terminal event (at once when the
	// terminal event is what it resumes after).
	for i, after := range append([]string{""}, ids(events)...) {
		got := subscribeAndCollect(ctx, t, b, id, after)()
		assert.Equal(t, ids(events[i:]), ids(got), "subscriber after %q on a finished task", after)
		assertSameContent(t, events[i:], got)
	}
}

func testSubscribeAfterTerminal(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	_, err := b.Append(ctx, id, progress.LogEvent("a"), progress.LogEvent("b"), failureEvent("cancelled"))
	require.NoError(t, err)

	ch, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	got := collect(t, ch)
	events := allEvents(ctx, t, b, id)
	require.Len(t, events, 3)
	assert.Equal(t, ids(events), ids(got))
	assertSameContent(t, events, got)
}

func testSubscribeErrors(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, statusEvent("x"))

	for _, bad := range malformedIDs {
		t.Run("malformed id "+bad, func(t *testing.T) {
			ch, err := b.Subscribe(ctx, id, bad)
			assert.ErrorIs(t, err, progress.ErrBadEventID)
			assert.Nil(t, ch)
		})
	}
	t.Run("unknown task", func(t *testing.T) {
		ch, err := b.Subscribe(ctx, newTaskID(t), "")
		assert.ErrorIs(t, err, progress.ErrNotFound)
		assert.Nil(t, ch)
	})
}

// goroutineSlack is how many goroutines more than before the suite lets a
// backend keep after its subscriptions end, for pools that grow on demand.
// A subscription that leaks even one goroutine leaks far more than this
// across the subscriptions of testSubscribeCancel.
const goroutineSlack = 5

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			require.Failf(t, "goroutines leaked", "%d running, want at most %d:\n%s", runtime.NumGoroutine(), n, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testSubscribeCancel(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, statusEvent("running"))

	// A first subscription lets the backend start whatever it shares
	// between subscriptions, so that only per-subscription goroutines are
	// counted below.
	warm, cancelWarm := context.WithCancel(ctx)
	ch, err := b.Subscribe(warm, id, "")
	require.NoError(t, err)
	receive(t, ch, 1)
	cancelWarm()
	collect(t, ch)
	baseline := runtime.NumGoroutine()

	const subscribers = 40
	cancels := make([]context.CancelFunc, subscribers)
	chans := make([]<-chan progress.Event, subscribers)
	for i := range subscribers {
		subCtx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		chans[i], err = b.Subscribe(subCtx, id, "")
		require.NoError(t, err)
	}
	for i := range subscribers {
		receive(t, chans[i], 1)
		if i%2 == 0 {
			// Half of them with a live event pending delivery.
			appendOne(ctx, t, b, id, statusEvent(fmt.Sprintf("pending for %d", i)))
		}
	}
	for i := range subscribers {
		cancels[i]()
		// The channel closes after at most the events already pending.
		for range collect(t, chans[i]) {
		}
	}
	waitGoroutines(t, baseline+goroutineSlack)

	// The task itself is unaffected.
	_, err = b.Append(ctx, id, successEvent(`"ok"`))
	assert.NoError(t, err)
}

func testSlowSubscriber(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	ch, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)

	// Nobody reads ch while these are appended.
	const n = 2000
	var appended []progress.Event
	for i := 0; i < n; {
		if i%100 == 0 && i+10 <= n {
			batch := make([]progress.Event, 10)
			for j := range batch {
				batch[j] = progress.Event{Type: progress.EventToken, Token: fmt.Sprintf("t%d ", i+j)}
			}
			_, err := b.Append(ctx, id, batch...)
			require.NoError(t, err)
			appended = append(appended, batch...)
			i += len(batch)
			continue
		}
		e := progress.Event{Type: progress.EventProgress, Progress: i * 100 / n, Status: fmt.Sprintf("event %d", i)}
		appendOne(ctx, t, b, id, e)
		appended = append(appended, e)
		i++
	}
	appendOne(ctx, t, b, id, successEvent(`"done"`))
	appended = append(appended, successEvent(`"done"`))

	got := collect(t, ch)
	events := allEvents(ctx, t, b, id)
	require.Len(t, events, n+1)
	assert.Equal(t, ids(events), ids(got), "a slow subscriber gets every event once, in order")
	assertSameContent(t, appended, got)
}

func testManySubscribers(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	appendOne(ctx, t, b, id, statusEvent("before anyone listens"))

	const subscribers, n = 50, 200
	waits := make([]func() []progress.Event, subscribers)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			if _, err := b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("line %d", i))); err != nil {
				t.Errorf("append %d: %v", i, err)
				return
			}
		}
		if _, err := b.Append(ctx, id, successEvent(`"done"`)); err != nil {
			t.Errorf("append terminal: %v", err)
		}
	})
	// Subscribers join while the events are being appended.
	for i := range subscribers {
		waits[i] = subscribeAndCollect(ctx, t, b, id, "")
	}
	wg.Wait()

	events := allEvents(ctx, t, b, id)
	require.Len(t, events, n+2)
	for i, wait := range waits {
		assert.Equal(t, ids(events), ids(wait()), "subscriber %d", i)
	}
}

func testConcurrentAppenders(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	watch := subscribeAndCollect(ctx, t, b, id, "")

	const writers, perWriter = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				e := progress.Event{Type: progress.EventStatus, Status: fmt.Sprintf("%d/%d", w, i)}
				if i%10 == 9 {
					// Some batches, to mix the two forms of Append.
					_, err := b.Append(ctx, id, e, progress.Event{Type: progress.EventToken, Token: fmt.Sprintf("%d/%d", w, i)})
					if err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					continue
				}
				if _, err := b.Append(ctx, id, e); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	_, err := b.Append(ctx, id, successEvent(`"done"`))
	require.NoError(t, err)

	events := allEvents(ctx, t, b, id)
	batches := perWriter / 10
	require.Len(t, events, writers*(perWriter+batches)+1)
	requireUnique(t, events)

	// Each writer's events appear in the order it appended them, and each
	// batch stays together.
	next := make([]int, writers)
	for i, e := range events[:len(events)-1] {
		if e.Type == progress.EventToken {
			require.Positive(t, i)
			assert.Equal(t, events[i-1].Status, e.Token, "a batch was split")
			continue
		}
		var w, n int
		_, err := fmt.Sscanf(e.Status, "%d/%d", &w, &n)
		require.NoError(t, err, "event %d: %q", i, e.Status)
		require.Less(t, w, writers)
		assert.Equal(t, next[w], n, "writer %d's events out of order", w)
		next[w] = n + 1
	}
	for w, n := range next {
		assert.Equal(t, perWriter, n, "events of writer %d", w)
	}

	// A subscriber that was there throughout saw the same sequence.
	assert.Equal(t, ids(events), ids(watch()))

	// And resuming from the middle gives exactly the rest.
	mid := len(events) / 2
	after, err := b.Events(ctx, id, events[mid].ID)
	require.NoError(t, err)
	assert.Equal(t, ids(events[mid+1:]), ids(after))
}

// testSnapshotTimes checks the times a snapshot records: when it was last
// updated, when its current run started and when it ended, each by the
// store's clock (which may be another machine's: a second of skew is
// allowed).
func testSnapshotTimes(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	id := createTask(ctx, t, b)
	snap, _, err := b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.True(t, snap.UpdatedAt.IsZero() && snap.StartedAt.IsZero() && snap.EndedAt.IsZero(), "a new task has no times: %+v", snap)

	near := func(what string, at time.Time, from, to time.Time) {
		t.Helper()
		assert.False(t, at.IsZero(), "%s not recorded", what)
		assert.WithinRange(t, at, from.Add(-time.Second), to.Add(time.Second), what)
	}
	t0 := time.Now()
	appendOne(ctx, t, b, id, statusEvent("looking"))
	snap, _, err = b.Snapshot(ctx, id)
	require.NoError(t, err)
	near("updated_at after the first event", snap.UpdatedAt, t0, time.Now())
	assert.Equal(t, snap.UpdatedAt, snap.StartedAt, "leaving PENDING starts the run")
	assert.True(t, snap.EndedAt.IsZero())
	firstStart := snap.StartedAt

	time.Sleep(5 * time.Millisecond)
	appendOne(ctx, t, b, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running again"})
	snap, _, err = b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.True(t, snap.StartedAt.After(firstStart), "a state event to PROGRESS starts a new run: %v, then %v", firstStart, snap.StartedAt)
	secondStart := snap.StartedAt

	time.Sleep(5 * time.Millisecond)
	appendOne(ctx, t, b, id, progress.Event{Type: progress.EventProgress, Progress: 50})
	snap, _, err = b.Snapshot(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, secondStart, snap.StartedAt, "a progress event does not start a run")
	assert.True(t, snap.UpdatedAt.After(secondStart))

	appendOne(ctx, t, b, id, progress.LogEvent("noted"))
	appendOne(ctx, t, b, id, successEvent(`"done"`))
	snap, _, err = b.Snapshot(ctx, id)
	require.NoError(t, err)
	near("ended_at", snap.EndedAt, t0, time.Now())
	events := allEvents(ctx, t, b, id)
	require.Len(t, events, 5)
	for i, e := range events {
		near(fmt.Sprintf("at of event %d", i), e.At, t0, time.Now())
		if i > 0 {
			assert.False(t, e.At.Before(events[i-1].At), "event %d recorded before the one before it", i)
		}
	}
	assert.Equal(t, events[4].At, snap.EndedAt, "the end is the terminal event's time")
	require.Len(t, snap.Details.StepResults, 1)
	assert.Equal(t, events[3].At, snap.Details.StepResults[0].At, "a step's time is its event's")
	assert.Equal(t, events[1].At, snap.StartedAt)
	assert.Equal(t, snap.EndedAt, snap.UpdatedAt)
	assert.False(t, snap.EndedAt.Before(snap.StartedAt))
	assert.Equal(t, secondStart, snap.StartedAt)
}

// testHead checks that Head gives the state and last event id that
// Snapshot gives, at every step of a task's life, and ErrNotFound for an
// unknown task.
func testHead(t *testing.T, b progress.Backend) {
	ctx := testContext(t)
	_, _, err := b.Head(ctx, newTaskID(t))
	require.ErrorIs(t, err, progress.ErrNotFound)

	id := createTask(ctx, t, b)
	check := func(want progress.State) {
		t.Helper()
		snap, last, err := b.Snapshot(ctx, id)
		require.NoError(t, err)
		state, headLast, err := b.Head(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, want, state)
		assert.Equal(t, snap.State, state)
		assert.Equal(t, last, headLast)
	}
	check(progress.StatePending)
	appendOne(ctx, t, b, id, progress.Event{Type: progress.EventToken, Token: "a"})
	check(progress.StatePending)
	appendOne(ctx, t, b, id, statusEvent("Working"))
	check(progress.StateProgress)
	_, err = b.Append(ctx, id, statusEvent("one"), statusEvent("two"))
	require.NoError(t, err)
	check(progress.StateProgress)
	appendOne(ctx, t, b, id, successEvent(`"done"`))
	check(progress.StateSuccess)
}
