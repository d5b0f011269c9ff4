package redisbackend_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
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

// hashTag returns the part of key Redis Cluster hashes: the text between
// the first '{' and the next '}', when not empty; the whole key otherwise.
func hashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

func TestHashTag(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"p:{abc}:task": "abc",
		"p:{q:x}:wake": "q:x",
		"p:{}:x{y}":    "p:{}:x{y}",
		"plain":        "plain",
		"a{b}c{d}":     "b",
	} {
		assert.Equal(t, want, hashTag(key), key)
	}
}

// newTask returns a task as a Broker would enqueue it.
func newTask() *queue.Task {
	return &queue.Task{
		ID: queue.NewID(), Flow: "f", Inputs: json.RawMessage(`{}`),
		MaxAttempts: 3, Timeout: time.Minute, EnqueuedAt: time.Now().UTC(),
	}
}

// runTask takes a task through its life: progress record, enqueue, lease,
// events, success, ack. It returns the task.
func runTask(ctx context.Context, t *testing.T, b *redisbackend.Backend) *queue.Task {
	t.Helper()
	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	require.NoError(t, b.Enqueue(ctx, task))
	leases, err := b.Fetch(ctx, "w1", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	require.Equal(t, task.ID, leases[0].Task.ID)
	_, err = b.Append(ctx, task.ID,
		progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"},
		progress.LogEvent("working"),
		progress.Event{Type: progress.EventToken, Token: "tok"},
		progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: json.RawMessage(`"ok"`)},
	)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, leases[0]))
	return task
}

func TestKeySchema(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	const prefix = "schema"
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: prefix, Queue: "mail"})

	done := runTask(ctx, t, b)
	running := newTask()
	require.NoError(t, b.Create(ctx, running.ID))
	require.NoError(t, b.Enqueue(ctx, running))
	_, err := b.Fetch(ctx, "w1", 1, time.Minute)
	require.NoError(t, err)
	require.NoError(t, b.SaveCheckpoint(ctx, running.ID, progress.Checkpoint{Key: "step", Attempt: 1, Output: json.RawMessage(`1`)}))
	later := newTask()
	later.RunAt = time.Now().Add(time.Hour)
	require.NoError(t, b.Create(ctx, later.ID))
	require.NoError(t, b.Enqueue(ctx, later))
	failed := newTask()
	require.NoError(t, b.Create(ctx, failed.ID))
	require.NoError(t, b.Enqueue(ctx, failed))
	leases, err := b.Fetch(ctx, "w1", 1, time.Minute)
	require.NoError(t, err)
	require.Equal(t, failed.ID, leases[0].Task.ID)
	require.NoError(t, b.Bury(ctx, leases[0], "boom"))
	soon := newTask() // due before a waiting fetcher would look again
	soon.RunAt = time.Now().Add(500 * time.Millisecond)
	require.NoError(t, b.Create(ctx, soon.ID))
	require.NoError(t, b.Enqueue(ctx, soon))
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = b.Subscribe(sub, running.ID, "")
	require.NoError(t, err)
	_, err = b.Cancellations(sub)
	require.NoError(t, err)

	keys, err := srv.Do("KEYS", "*").AsStrSlice()
	require.NoError(t, err)
	taskKey := regexp.MustCompile(`^schema:\{([0-9a-f]{32})\}:(task|steps|events|checkpoints)$`)
	queueKey := regexp.MustCompile(`^schema:\{q:mail\}:(stream|delayed|leased|wake|dead|buried|index|index:[a-z]+|flows|workers|workers:seen|workers:deadlines|workers:contact|workers:swept)$`)
	perTask := map[string][]string{}
	var queueKeys []string
	for _, k := range keys {
		switch {
		case taskKey.MatchString(k):
			m := taskKey.FindStringSubmatch(k)
			assert.Equal(t, m[1], hashTag(k), "task key %s is tagged with its task id", k)
			perTask[m[1]] = append(perTask[m[1]], m[2])
		case queueKey.MatchString(k):
			assert.Equal(t, "q:mail", hashTag(k))
			queueKeys = append(queueKeys, queueKey.FindStringSubmatch(k)[1])
		default:
			assert.Fail(t, "key outside the schema", k)
		}
	}
	assert.ElementsMatch(t, []string{"task", "steps", "events"}, perTask[done.ID], "keys of a finished task")
	assert.ElementsMatch(t, []string{"task", "checkpoints"}, perTask[running.ID], "keys of a task with a checkpoint and without events yet")
	assert.ElementsMatch(t, []string{"task"}, perTask[later.ID], "keys of a delayed task")
	assert.ElementsMatch(t, []string{"task"}, perTask[failed.ID], "keys of a buried task")
	assert.ElementsMatch(t, []string{"stream", "delayed", "leased", "wake", "dead", "buried",
		"index", "index:" + done.Flow, "flows"}, queueKeys)

	eventually(t, func() bool {
		chans, err := srv.Do("PUBSUB", "SHARDCHANNELS", "*").AsStrSlice()
		require.NoError(t, err)
		return assert.ObjectsAreEqual(
			[]string{"schema:{" + running.ID + "}:live", "schema:{q:mail}:cancel"}, sorted(chans))
	}, "channels follow the schema")
}

func TestRetention(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	client := newClient(t, srv)

	t.Run("every task key expires", func(t *testing.T) {
		const retention = time.Hour
		b := newBackend(t, client, redisbackend.Config{Retention: retention})
		task := runTask(ctx, t, b)
		keys, err := srv.Do("KEYS", "*{"+task.ID+"}*").AsStrSlice()
		require.NoError(t, err)
		require.Len(t, keys, 3)
		for _, k := range keys {
			ttl, err := srv.Do("PTTL", k).AsInt64()
			require.NoError(t, err)
			assert.Positive(t, ttl, k)
			assert.LessOrEqual(t, ttl, (retention + retention/8).Milliseconds(), k)
			assert.Greater(t, ttl, (retention - time.Minute).Milliseconds(), k)
		}
	})

	t.Run("append refreshes the expiry when due and at the end", func(t *testing.T) {
		const retention = time.Hour
		b := newBackend(t, client, redisbackend.Config{Retention: retention})
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		prefix := b.Prefix() + ":{" + task.ID + "}:"
		keys := []string{"task", "steps", "events"}
		ttls := func() map[string]int64 {
			t.Helper()
			out := map[string]int64{}
			for _, k := range keys {
				ttl, err := srv.Do("PTTL", prefix+k).AsInt64()
				require.NoError(t, err)
				out[k] = ttl
			}
			return out
		}
		// age makes the keys look written d ago: their expiry, and the
		// snapshot's record of it, move d closer.
		keep := retention + retention/8
		age := func(d time.Duration) {
			t.Helper()
			now, err := srv.Do("TIME").AsStrSlice()
			require.NoError(t, err)
			sec, _ := strconv.ParseInt(now[0], 10, 64)
			exp := sec*1000 + (keep - d).Milliseconds()
			require.NoError(t, srv.Do("HSET", prefix+"task", "exp", strconv.FormatInt(exp, 10)).Error())
			for _, k := range keys {
				require.NoError(t, srv.Do("PEXPIREAT", prefix+k, strconv.FormatInt(exp, 10)).Error())
			}
		}
		sameExpiry := func(got map[string]int64) {
			t.Helper()
			for _, k := range keys {
				assert.InDelta(t, got["task"], got[k], 100, "%s expires with the task hash", k)
			}
		}

		// Created with an eighth more than the retention.
		created, err := srv.Do("PTTL", prefix+"task").AsInt64()
		require.NoError(t, err)
		assert.Greater(t, created, (keep - time.Minute).Milliseconds(), "on creation")

		// The first Append creates the steps and the events: they get the
		// snapshot's expiry.
		_, err = b.Append(ctx, task.ID, progress.LogEvent("one"))
		require.NoError(t, err)
		sameExpiry(ttls())

		// Written a little while ago, more than the retention and a
		// sixteenth left (the margin for the writer's clock, which
		// decides): an Append leaves the expiry alone.
		age(2 * time.Minute)
		_, err = b.Append(ctx, task.ID, progress.LogEvent("two"))
		require.NoError(t, err)
		got := ttls()
		sameExpiry(got)
		assert.Less(t, got["task"], (keep-2*time.Minute).Milliseconds()+1, "not refreshed")
		assert.Greater(t, got["task"], retention.Milliseconds(), "at least the retention left")

		// Written long ago, less than the retention left: an Append gives
		// all three nine eighths of it again.
		age(30 * time.Minute)
		_, err = b.Append(ctx, task.ID, progress.Event{Type: progress.EventStatus, Status: "three"})
		require.NoError(t, err)
		got = ttls()
		sameExpiry(got)
		assert.Greater(t, got["task"], (keep - time.Minute).Milliseconds(), "refreshed")

		// So does the terminal event, under the same rule.
		age(20 * time.Minute)
		_, err = b.Append(ctx, task.ID, progress.Event{Type: progress.EventState, State: progress.StateSuccess})
		require.NoError(t, err)
		got = ttls()
		sameExpiry(got)
		assert.Greater(t, got["task"], (keep - time.Minute).Milliseconds(), "refreshed at the end")
	})

	t.Run("checkpoints expire with the task's progress keys, never after them", func(t *testing.T) {
		const retention = time.Hour
		keep := retention + retention/8
		b := newBackend(t, client, redisbackend.Config{Retention: retention})
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		_, err := b.Append(ctx, task.ID, progress.LogEvent("one"))
		require.NoError(t, err)
		prefix := b.Prefix() + ":{" + task.ID + "}:"
		keys := []string{"task", "steps", "events", "checkpoints"}
		ttl := func(k string) int64 {
			t.Helper()
			ms, err := srv.Do("PTTL", prefix+k).AsInt64()
			require.NoError(t, err)
			return ms
		}
		age := func(d time.Duration) {
			t.Helper()
			now, err := srv.Do("TIME").AsStrSlice()
			require.NoError(t, err)
			sec, _ := strconv.ParseInt(now[0], 10, 64)
			exp := strconv.FormatInt(sec*1000+(keep-d).Milliseconds(), 10)
			require.NoError(t, srv.Do("HSET", prefix+"task", "exp", exp).Error())
			for _, k := range keys {
				require.NoError(t, srv.Do("PEXPIREAT", prefix+k, exp).Error())
			}
		}
		save := func(key string) {
			t.Helper()
			require.NoError(t, b.SaveCheckpoint(ctx, task.ID, progress.Checkpoint{Key: key, Attempt: 1, Output: json.RawMessage(`1`)}))
		}

		save("first")
		for _, k := range keys {
			assert.InDelta(t, ttl("task"), ttl(k), 100, "a new checkpoints hash gets the task's expiry: %s", k)
		}

		// Less than the retention left: a checkpoint is a write, and
		// moves the expiry of all four keys as an Append would.
		age(30 * time.Minute)
		save("second")
		for _, k := range keys {
			assert.Greater(t, ttl(k), (keep - time.Minute).Milliseconds(), "refreshed by a checkpoint: %s", k)
		}

		// An Append that moves the expiry later leaves the checkpoints
		// hash alone: it still expires before the task, at least the
		// retention after the last save.
		age(30 * time.Minute)
		_, err = b.Append(ctx, task.ID, progress.LogEvent("two"))
		require.NoError(t, err)
		assert.Greater(t, ttl("task"), (keep - time.Minute).Milliseconds())
		assert.Less(t, ttl("checkpoints"), (keep - 29*time.Minute).Milliseconds())
		assert.Greater(t, ttl("checkpoints"), (keep - 31*time.Minute).Milliseconds())
	})

	t.Run("a delayed task outlives its delay", func(t *testing.T) {
		const retention, delay = time.Hour, 10 * time.Hour
		b := newBackend(t, client, redisbackend.Config{Retention: retention})
		task := newTask()
		task.RunAt = time.Now().Add(delay)
		require.NoError(t, b.Create(ctx, task.ID))
		require.NoError(t, b.Enqueue(ctx, task))
		ttl, err := srv.Do("PTTL", b.Prefix()+":{"+task.ID+"}:task").AsInt64()
		require.NoError(t, err)
		assert.Greater(t, ttl, delay.Milliseconds())
	})

	t.Run("a task created again after it expired starts empty", func(t *testing.T) {
		// A retention long enough for the four writes and reads below
		// to come first on a loaded machine (TestRetention runs in
		// parallel with other tests); the case waits for the expiry.
		b := newBackend(t, client, redisbackend.Config{Retention: time.Second})
		task := newTask()
		require.NoError(t, b.CreateAndEnqueue(ctx, task))
		_, err := b.Append(ctx, task.ID, progress.LogEvent("one"))
		require.NoError(t, err)
		require.NoError(t, b.SaveCheckpoint(ctx, task.ID, progress.Checkpoint{Key: "step", Attempt: 1, Output: json.RawMessage(`1`)}))
		snap, _, err := b.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		require.Len(t, snap.Details.StepResults, 1, "a log entry is a step")
		require.Eventually(t, func() bool {
			_, _, err := b.Snapshot(ctx, task.ID)
			return errors.Is(err, progress.ErrNotFound)
		}, 5*time.Second, 10*time.Millisecond)
		// A record without a snapshot under the same id (what Enqueue
		// alone leaves), marked.
		record := b.Prefix() + ":{" + task.ID + "}:task"
		require.NoError(t, srv.Do("HSET", record, "rec", "3 0 0 0 1 0 f{}", "cancelled", "1").Error())
		require.NoError(t, srv.Do("PEXPIRE", record, "60000").Error())

		require.NoError(t, b.CreateAndEnqueue(ctx, task))
		events, err := b.Events(ctx, task.ID, "")
		require.NoError(t, err)
		assert.Empty(t, events, "no event of the namesake")
		snap, _, err = b.Snapshot(ctx, task.ID)
		require.NoError(t, err)
		assert.Empty(t, snap.Details.StepResults, "no step of the namesake")
		cps, err := b.Checkpoints(ctx, task.ID)
		require.NoError(t, err)
		assert.Empty(t, cps, "no checkpoint of the namesake")
		got, err := b.Get(ctx, task.ID)
		require.NoError(t, err)
		assert.False(t, got.Cancelled, "the record is the new task's")
	})

	t.Run("an expired task is gone and its subscription ends", func(t *testing.T) {
		// The retention leaves a loaded machine (this test runs in
		// parallel with others) the time to read the backlog first.
		b := newBackend(t, client, redisbackend.Config{Retention: 1500 * time.Millisecond, PollInterval: 20 * time.Millisecond})
		task := newTask()
		require.NoError(t, b.Create(ctx, task.ID))
		_, err := b.Append(ctx, task.ID, progress.LogEvent("one"))
		require.NoError(t, err)
		ch, err := b.Subscribe(ctx, task.ID, "")
		require.NoError(t, err)
		got := collect(t, ch)
		require.Len(t, got, 1, "the backlog, then the channel closes when the task expires")
		_, _, err = b.Snapshot(ctx, task.ID)
		assert.ErrorIs(t, err, progress.ErrNotFound)
		_, err = b.Append(ctx, task.ID, progress.LogEvent("late"))
		assert.ErrorIs(t, err, progress.ErrNotFound)
	})
}

func TestEventIDs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: "ids"})
	id := queue.NewID()
	require.NoError(t, b.Create(ctx, id))
	eventsKey := "ids:{" + id + "}:events"
	status := func(s string) progress.Event { return progress.Event{Type: progress.EventStatus, Status: s} }
	// tags maps each element to the tag of its ids.
	tags := map[string]string{}
	// position returns an id without its tag, "<n>-<k>", and checks the
	// tag: four digits or lowercase letters, the same for every event of
	// an element.
	position := func(id string) string {
		t.Helper()
		n, rest, _ := strings.Cut(id, "-")
		k, tag, ok := strings.Cut(rest, "-")
		require.True(t, ok, "id %q has a tag", id)
		assert.Regexp(t, `^[0-9a-z]{4}$`, tag, id)
		if was, seen := tags[n]; seen {
			assert.Equal(t, was, tag, "the events of element %s have one tag", n)
		}
		tags[n] = tag
		return n + "-" + k
	}
	events := func(after string) []progress.Event {
		t.Helper()
		events, err := b.Events(ctx, id, after)
		require.NoError(t, err)
		return events
	}
	eventIDs := func(after string) []string {
		t.Helper()
		events := events(after)
		out := make([]string, len(events))
		for i, e := range events {
			out[i] = position(e.ID)
		}
		return out
	}

	// The n-th Append is the n-th element of the list, one line per event,
	// and its events are n-0, n-1... with the element's tag.
	last, err := b.Append(ctx, id, status("a"), status("b"), status("c"))
	require.NoError(t, err)
	assert.Equal(t, "1-2", position(last))
	last, err = b.Append(ctx, id, status("d"))
	require.NoError(t, err)
	assert.Equal(t, "2-0", position(last))
	elements, err := srv.Do("LRANGE", eventsKey, "0", "-1").AsStrSlice()
	require.NoError(t, err)
	require.Len(t, elements, 2, "one element per Append")
	assert.Len(t, strings.Split(elements[0], "\n"), 3, "one line per event")
	all := events("")
	assert.Equal(t, []string{"1-0", "1-1", "1-2", "2-0"}, eventIDs(""))
	assert.Equal(t, []string{"1-2", "2-0"}, eventIDs(all[1].ID), "from inside an element")
	assert.Equal(t, []string{"2-0"}, eventIDs(all[2].ID))
	assert.Empty(t, eventIDs(all[3].ID))
	assert.Equal(t, []string{"1-2", "2-0"}, eventIDs("1-1"), "an id without a tag (an earlier version's)")
	assert.Empty(t, eventIDs("7-0"), "after an id without a tag that no event has yet")

	// Past a page of elements: Events reads on, and every id follows the
	// one before it.
	const more = 1200
	for range more {
		_, err := b.Append(ctx, id, status("x"), status("y"))
		require.NoError(t, err)
	}
	allIDs := eventIDs("")
	require.Len(t, allIDs, 4+2*more)
	assert.Equal(t, strconv.Itoa(2+more)+"-1", allIDs[len(allIDs)-1])
	for i, n := 0, 3; n <= 2+more; n++ {
		for k := range 2 {
			assert.Equal(t, strconv.Itoa(n)+"-"+strconv.Itoa(k), allIDs[4+i], "event %d", 4+i)
			i++
		}
	}
	assert.Len(t, eventIDs("700-1"), 2*(2+more-700))
	assert.Len(t, eventIDs("700-1-"+tags["700"]), 2*(2+more-700))
}
