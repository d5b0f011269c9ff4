package redisbackend_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// clients returns the connections of srv from CLIENT LIST, each as its
// fields.
func clients(t *testing.T, srv *redistest.Server) []map[string]string {
	t.Helper()
	list, err := srv.Do("CLIENT", "LIST").ToString()
	require.NoError(t, err)
	return parseClientList(list)
}

// parseClientList reads the text of CLIENT LIST: each connection as its
// fields.
func parseClientList(list string) []map[string]string {
	var out []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		out = append(out, fields)
	}
	return out
}

// subscribedClients returns the connections subscribed to at least one
// channel.
func subscribedClients(t *testing.T, srv *redistest.Server) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, c := range clients(t, srv) {
		if c["ssub"] != "0" {
			out = append(out, c)
		}
	}
	return out
}

func TestSubscribersShareOneConnection(t *testing.T) {
	t.Parallel()
	const tasks, perTask, live = 200, 10, 5 // 2,000 subscriptions
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	redisbackend.SetDeadChannels(b, 0, 0) // channels left go at once
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	ids := make([]string, tasks)
	for i := range ids {
		ids[i] = newTask().ID
		require.NoError(t, b.Create(ctx, ids[i]))
		_, err := b.Append(ctx, ids[i], progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
		require.NoError(t, err)
	}
	// One subscription, so that the backend has opened all it shares.
	warm, stopWarm := context.WithCancel(ctx)
	ch, err := b.Subscribe(warm, ids[0], "")
	require.NoError(t, err)
	<-ch
	stopWarm()
	collect(t, ch)
	// Its channel goes with a replacement of the pub/sub connection:
	// count once the old one is closed, not while both are open.
	eventually(t, func() bool { return len(subscribedClients(t, srv)) == 0 }, "the warm-up's channel left")
	before := len(clients(t, srv))

	results := subscribeEach(ctx, t, b, ids, perTask)

	during := len(clients(t, srv))
	assert.Equal(t, before, during, "connections with 1 subscription and with %d", tasks*perTask)
	subs := subscribedClients(t, srv)
	require.Len(t, subs, 1, "one pub/sub connection for every subscription")
	assert.Equal(t, fmt.Sprint(tasks), subs[0]["ssub"], "one Redis subscription per task, not per subscriber")

	finishEach(ctx, t, b, ids, live, results)
	// A connection that replaces the pub/sub one (to leave the channels
	// that lost their subscribers) is there for a moment beside it.
	eventually(t, func() bool { return len(clients(t, srv)) == before && len(subscribedClients(t, srv)) == 0 },
		"as many connections as before once the subscriptions ended, every channel unsubscribed")
}

// subscriberResult is what one subscriber of a task received.
type subscriberResult struct {
	task   int
	events []progress.Event
	err    error
}

// subscribeEach subscribes perTask times to each task of taskIDs, which have
// an event each already, and returns once every subscription has
// delivered it. Each subscription's events arrive on the channel when it
// ends.
func subscribeEach(ctx context.Context, t *testing.T, b *redisbackend.Backend, taskIDs []string, perTask int) <-chan subscriberResult {
	t.Helper()
	results := make(chan subscriberResult, len(taskIDs)*perTask)
	var started sync.WaitGroup
	for i := range len(taskIDs) * perTask {
		task := i % len(taskIDs)
		ch, err := b.Subscribe(ctx, taskIDs[task], "")
		require.NoError(t, err)
		started.Add(1)
		go func() {
			first, ok := <-ch // the backlog: the subscription is up
			started.Done()
			got := []progress.Event{first}
			var err error
			if ok {
				var rest []progress.Event
				rest, err = drain(ch)
				got = append(got, rest...)
			}
			results <- subscriberResult{task, got, err}
		}()
	}
	started.Wait()
	return results
}

// finishEach appends live log lines, then SUCCESS, to each task of taskIDs,
// all tasks at once, and checks that every subscriber of subscribeEach
// got every event of its task once, in order.
func finishEach(ctx context.Context, t *testing.T, b *redisbackend.Backend, taskIDs []string, live int, results <-chan subscriberResult) {
	t.Helper()
	var writers sync.WaitGroup
	for _, id := range taskIDs {
		writers.Go(func() {
			for j := range live {
				_, err := b.Append(ctx, id, progress.LogEvent(fmt.Sprintf("line %d", j)))
				assert.NoError(t, err)
			}
			_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Result: []byte(`"ok"`)})
			assert.NoError(t, err)
		})
	}
	writers.Wait()

	want := make([][]string, len(taskIDs))
	for i, id := range taskIDs {
		events, err := b.Events(ctx, id, "")
		require.NoError(t, err)
		require.Len(t, events, live+2, "task %s: its first event, the live ones and SUCCESS", id)
		want[i] = ids(events)
	}
	for range cap(results) {
		select {
		case r := <-results:
			assert.NoError(t, r.err, "subscriber of task %d", r.task)
			assert.Equal(t, want[r.task], ids(r.events), "subscriber of task %d", r.task)
		case <-ctx.Done():
			require.FailNow(t, "subscribers did not finish")
		}
	}
}

func TestSubscriptionsLeaveWithTheirLastSubscriber(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	redisbackend.SetDeadChannels(b, 0, 0) // channels left go at once
	ctx := context.Background()
	task := newTask()
	require.NoError(t, b.Create(ctx, task.ID))
	numsub := func() int64 {
		res, err := srv.Do("PUBSUB", "SHARDNUMSUB", b.Prefix()+":{"+task.ID+"}:live").ToArray()
		require.NoError(t, err)
		require.Len(t, res, 2)
		n, err := res[1].AsInt64()
		require.NoError(t, err)
		return n
	}

	var cancels []context.CancelFunc
	var chans []<-chan progress.Event
	for range 3 {
		sub, cancel := context.WithCancel(ctx)
		ch, err := b.Subscribe(sub, task.ID, "")
		require.NoError(t, err)
		cancels, chans = append(cancels, cancel), append(chans, ch)
	}
	_, err := b.Append(ctx, task.ID, progress.LogEvent("hello"))
	require.NoError(t, err)
	for _, ch := range chans {
		<-ch
	}
	assert.Equal(t, int64(1), numsub(), "three local subscribers, one Redis subscription")

	for i, cancel := range cancels {
		cancel()
		collect(t, chans[i])
		if i < len(cancels)-1 {
			assert.Equal(t, int64(1), numsub(), "still subscribed with %d subscribers left", len(cancels)-1-i)
		}
	}
	eventually(t, func() bool { return numsub() == 0 }, "unsubscribed after the last subscriber left")

	// And subscribed again for a new subscriber.
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := b.Subscribe(sub, task.ID, "")
	require.NoError(t, err)
	require.Len(t, collectN(t, ch, 1), 1)
	assert.Equal(t, int64(1), numsub())
	_, err = b.Append(ctx, task.ID, progress.LogEvent("again"))
	require.NoError(t, err)
	got := collectN(t, ch, 1)
	assert.Equal(t, "again", got[0].Step.Message)
}

// collectN reads n events from ch.
func collectN(t *testing.T, ch <-chan progress.Event, n int) []progress.Event {
	t.Helper()
	var got []progress.Event
	timeout := time.After(waitLimit)
	for len(got) < n {
		select {
		case e, ok := <-ch:
			require.True(t, ok, "channel closed after %d of %d events", len(got), n)
			got = append(got, e)
		case <-timeout:
			require.FailNow(t, "events did not arrive", "got %d of %d", len(got), n)
		}
	}
	return got
}
