package redisbackend_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// replicaOf keeps task id's keys as a replica has them now, and returns
// what a lossy failover does to them: the replica, promoted, holds them
// as they were then, whatever the primary accepted since is lost.
func replicaOf(t *testing.T, srv *redistest.Server, prefix, id string) (promote func()) {
	t.Helper()
	return srv.KeepKeys(t, prefix+":{"+id+"}:task", prefix+":{"+id+"}:events", prefix+":{"+id+"}:steps")
}

// statuses returns the status line of each event.
func statuses(events []progress.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Status
	}
	return out
}

// watchAfter follows task id from afterID as a watcher that reconnects
// does: when its subscription ends before the task's terminal event, it
// subscribes again after the last id it got, and when one ends without an
// event (the store no longer holds the events up to its id), from the
// first event. It returns the status line of every event each
// subscription delivered, and sends each to seen (when not nil) as it
// comes.
func watchAfter(t *testing.T, b progress.Backend, id, afterID string, seen chan<- string) [][]string {
	t.Helper()
	var runs [][]string
	last := afterID
	for range 5 {
		ch, err := b.Subscribe(context.Background(), id, last)
		require.NoError(t, err)
		var got []progress.Event
		for e := range ch {
			got = append(got, e)
			if seen != nil {
				seen <- e.Status
			}
		}
		runs = append(runs, statuses(got))
		if len(got) == 0 {
			if last == "" {
				return runs
			}
			last = ""
			continue
		}
		last = got[len(got)-1].ID
		if got[len(got)-1].Terminal() {
			return runs
		}
	}
	return runs
}

func status(s string) progress.Event {
	return progress.Event{Type: progress.EventStatus, Status: s}
}

func success(s string) progress.Event {
	return progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: s}
}

// TestLossyFailoverResume: after a failover that lost the last events
// of a running task, its next events take the positions of the lost
// ones. A watcher that saw a lost event and resumes after its id must
// neither skip the new events at those positions nor stop before the
// end: it gets the task's events again from the first one.
func TestLossyFailoverResume(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const prefix = "lossy"
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: prefix, PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	appendEvents := func(id string, events ...progress.Event) string {
		t.Helper()
		var last string
		for _, e := range events {
			var err error
			last, err = b.Append(ctx, id, e)
			require.NoError(t, err)
		}
		return last
	}
	// newTask returns a task whose events "one" and "two" reached the
	// replica and whose events "lost" and "lost too", of one append, did
	// not, the id of "lost too" (what a watcher saw last), and the
	// failover. The events that take their place are one per append:
	// their ids differ from "lost too"'s by position, whatever the tags
	// (which are those of contents with times, and the same once in
	// 36^4), so that these tests are deterministic; the last subtest
	// checks the tag alone.
	newTask := func() (id, lost string, promote func()) {
		id = queue.NewID()
		require.NoError(t, b.Create(ctx, id))
		appendEvents(id, status("one"), status("two"))
		promote = replicaOf(t, srv, prefix, id)
		lost, err := b.Append(ctx, id, status("lost"), status("lost too"))
		require.NoError(t, err)
		return id, lost, promote
	}

	t.Run("new events at the lost ids are not skipped", func(t *testing.T) {
		id, lost, promote := newTask()
		promote()
		appendEvents(id, status("three"), status("four"))
		events, err := b.Events(ctx, id, lost)
		require.NoError(t, err)
		assert.Equal(t, []string{"one", "two", "three", "four"}, statuses(events), "Events after the lost id")

		done := make(chan [][]string, 1)
		go func() { done <- watchAfter(t, b, id, lost, nil) }()
		appendEvents(id, success("done"))
		assert.Equal(t, [][]string{{}, {"one", "two", "three", "four", "done"}}, <-done,
			"a subscription after the lost id ends at once; the one from the first event follows the task to its end")
	})

	t.Run("a subscription after a lost id ends at once, without an event", func(t *testing.T) {
		// Its subscriber has the events up to that id, as it read them
		// before the failover (ssehttp from Events, WaitFinished from
		// Snapshot): events from the first, delivered after them, would
		// be folded twice. It must read the task again.
		id, lost, promote := newTask()
		promote()
		appendEvents(id, status("three"))
		ch, err := b.Subscribe(ctx, id, lost)
		require.NoError(t, err)
		select {
		case e, ok := <-ch:
			assert.False(t, ok, "no event, and the end; got %q", e.Status)
		case <-ctx.Done():
			require.FailNow(t, "the subscription did not end")
		}
	})

	t.Run("a task that ended within the lost id is watched to its end", func(t *testing.T) {
		id, lost, promote := newTask()
		promote()
		appendEvents(id, success("done"))
		got := watchAfter(t, b, id, lost, nil)
		assert.Equal(t, [][]string{{}, {"one", "two", "done"}}, got)
		events, err := b.Events(ctx, id, lost)
		require.NoError(t, err)
		assert.Equal(t, []string{"one", "two", "done"}, statuses(events), "Events after the lost id")
	})

	t.Run("an id the new primary has not issued yet starts from the first event", func(t *testing.T) {
		id, lost, promote := newTask()
		promote()
		events, err := b.Events(ctx, id, lost)
		require.NoError(t, err)
		assert.Equal(t, []string{"one", "two"}, statuses(events))
	})

	t.Run("a subscription open across the failover", func(t *testing.T) {
		id, _, promote := newTask()
		seen := make(chan string, 100)
		done := make(chan [][]string, 1)
		go func() { done <- watchAfter(t, b, id, "", seen) }()
		for _, want := range []string{"one", "two", "lost", "lost too"} {
			select {
			case got := <-seen:
				require.Equal(t, want, got)
			case <-ctx.Done():
				require.FailNow(t, "the watcher did not get "+want)
			}
		}
		promote()
		appendEvents(id, status("three"), status("four"), success("done"))
		var runs [][]string
		select {
		case runs = <-done:
		case <-ctx.Done():
			require.FailNow(t, "the watcher did not end")
		}
		assert.Equal(t, [][]string{{"one", "two", "lost", "lost too"}, {}, {"one", "two", "three", "four", "done"}}, runs,
			"the subscription ends at the failover, the next one, after the lost id, at once; the one from the first event has the new primary's whole log")
	})

	t.Run("an append of one event lost is told by its tag", func(t *testing.T) {
		id := queue.NewID()
		require.NoError(t, b.Create(ctx, id))
		appendEvents(id, status("one"), status("two"))
		promote := replicaOf(t, srv, prefix, id)
		lost := appendEvents(id, status("lost"))
		promote()
		if appendEvents(id, status("three")) == lost {
			t.Skip("the two appends' tags are the same, as once in 36^4: the event at the lost id is taken for the lost one")
		}
		events, err := b.Events(ctx, id, lost)
		require.NoError(t, err)
		assert.Equal(t, []string{"one", "two", "three"}, statuses(events))
	})
}

// TestResumeCheckCostsNoCommand: reading after a tagged id, which checks
// the tag, costs the commands that reading after an id without one did
// (the HGET of the state and the LRANGE from the id's element), and an
// append the commands it did; only a resumption whose tag does not match
// reads again, from the first element.
func TestResumeCheckCostsNoCommand(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const prefix = "cost"
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: prefix})
	ctx := context.Background()
	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	for _, s := range []string{"one", "two", "three"} {
		_, err := b.Append(ctx, id, status(s))
		require.NoError(t, err)
	}
	events, err := b.Events(ctx, id, "")
	require.NoError(t, err)
	second := events[1].ID
	untagged := second[:len(second)-5]
	require.Equal(t, "2-0", untagged)

	read := map[string]int{"hget": 1, "lrange": 1}
	for _, after := range []string{untagged, second} {
		n, calls := commandsOf(t, srv, func() {
			events, err := b.Events(ctx, id, after)
			require.NoError(t, err)
			assert.Equal(t, []string{"three"}, statuses(events))
		})
		assert.Equal(t, 2, n, "after %s", after)
		assert.Equal(t, read, calls, "after %s", after)
	}
	other := untagged + "-zzzz"
	if other == second {
		other = untagged + "-0000"
	}
	n, calls := commandsOf(t, srv, func() {
		events, err := b.Events(ctx, id, other)
		require.NoError(t, err)
		assert.Equal(t, []string{"one", "two", "three"}, statuses(events))
	})
	assert.Equal(t, 4, n, "a tag that does not match: the read again from the first event")
	assert.Equal(t, map[string]int{"hget": 2, "lrange": 2}, calls)

	n, calls = commandsOf(t, srv, func() {
		got, err := b.Append(ctx, id, status("four"))
		require.NoError(t, err)
		assert.Regexp(t, `^4-0-[0-9a-z]{4}$`, got)
	})
	assert.Equal(t, map[string]int{"evalsha": 1, "hmget": 1, "rpush": 1, "spublish": 1, "hset": 1}, calls, "an append")
	assert.Equal(t, 5, n)
}

// TestMalformedTaggedIDs: an id of the tagged form that no store issues
// gives progress.ErrBadEventID from Events and Subscribe, as a malformed
// id of the earlier form does.
func TestMalformedTaggedIDs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	_, err := b.Append(ctx, id, status("one"))
	require.NoError(t, err)
	for _, bad := range []string{"1-0-", "1-0-ABCD", "1-0-abc", "1-0-abcde", "1-0-ab d", "1-0-ab-d", "1-0-abcd-", "1-0-abcd-0", "0-0-abcd", "-0-abcd", "1--abcd", "1-x-abcd", "1-2-3"} {
		_, err := b.Events(ctx, id, bad)
		assert.ErrorIs(t, err, progress.ErrBadEventID, "Events after %q", bad)
		ch, err := b.Subscribe(ctx, id, bad)
		assert.ErrorIs(t, err, progress.ErrBadEventID, "Subscribe after %q", bad)
		assert.Nil(t, ch)
	}
}

// levelCounter counts the records of each level whose message starts
// with prefix.
type levelCounter struct {
	prefix string
	mu     sync.Mutex
	counts map[slog.Level]int
	attrs  []map[string]string // of the Info records
}

func (h *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *levelCounter) WithGroup(string) slog.Handler            { return h }
func (h *levelCounter) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, h.prefix) {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Level]++
	if r.Level == slog.LevelInfo {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		h.attrs = append(h.attrs, attrs)
	}
	return nil
}

// TestReplacedSubscriptionsLogOnce: many subscriptions that a failover
// ends (thousands of open event streams) log one Info line between them,
// with their count, and one Debug line each, not an Info line each.
func TestReplacedSubscriptionsLogOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const prefix = "lossylog"
	logs := &levelCounter{prefix: "flows: the events", counts: map[slog.Level]int{}}
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: prefix, PollInterval: time.Hour, Logger: slog.New(logs)})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	const watchers = 5
	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	_, err := b.Append(ctx, id, status("one"))
	require.NoError(t, err)
	subs := make([]<-chan progress.Event, watchers)
	next := func(ch <-chan progress.Event) string {
		t.Helper()
		select {
		case e := <-ch:
			return e.Status
		case <-ctx.Done():
			require.FailNow(t, "no event")
			return ""
		}
	}
	for i := range subs {
		subs[i], err = b.Subscribe(ctx, id, "")
		require.NoError(t, err)
		require.Equal(t, "one", next(subs[i]))
	}
	promote := replicaOf(t, srv, prefix, id)
	_, err = b.Append(ctx, id, status("lost"), status("lost too"))
	require.NoError(t, err)
	for _, ch := range subs {
		require.Equal(t, "lost", next(ch))
		require.Equal(t, "lost too", next(ch))
	}
	promote()
	_, err = b.Append(ctx, id, status("two"))
	require.NoError(t, err)
	for _, ch := range subs {
		select {
		case e, ok := <-ch:
			require.False(t, ok, "the subscription ends, before %q", e.Status)
		case <-ctx.Done():
			require.FailNow(t, "a subscription did not end")
		}
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	assert.Equal(t, map[slog.Level]int{slog.LevelInfo: 1, slog.LevelDebug: watchers}, logs.counts)
	require.Len(t, logs.attrs, 1)
	assert.Equal(t, "1", logs.attrs[0]["subscriptions"], "the first of a burst is logged at once")
}
