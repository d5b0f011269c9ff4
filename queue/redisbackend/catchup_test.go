package redisbackend_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// replySizes counts the round trips made through it and the size of
// the reply of each, in bytes of the strings it holds.
type replySizes struct {
	rueidis.Client
	trips atomic.Int64
	mu    sync.Mutex
	sizes []int
}

func (c *replySizes) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	res := c.Client.Do(ctx, cmd)
	c.note(res)
	return res
}

func (c *replySizes) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	res := c.Client.DoMulti(ctx, cmds...)
	c.note(res...)
	return res
}

// note counts one round trip whose replies are res.
func (c *replySizes) note(res ...rueidis.RedisResult) {
	c.trips.Add(1)
	n := 0
	for _, r := range res {
		if m, err := r.ToMessage(); err == nil {
			n += messageBytes(m)
		}
	}
	c.mu.Lock()
	c.sizes = append(c.sizes, n)
	c.mu.Unlock()
}

// reset forgets the replies so far.
func (c *replySizes) reset() {
	c.mu.Lock()
	c.sizes = nil
	c.mu.Unlock()
}

// replies returns the sizes of the replies since the last reset.
func (c *replySizes) replies() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sizes)
}

// messageBytes is the bytes of the strings m holds.
func messageBytes(m rueidis.RedisMessage) int {
	if m.IsString() {
		s, _ := m.ToString()
		return len(s)
	}
	n := 0
	if a, err := m.ToArray(); err == nil {
		for _, e := range a {
			n += messageBytes(e)
		}
	}
	return n
}

// TestCatchUpReadsLargeLogsInBoundedReplies: a subscription that catches
// up on a task whose events list holds many large elements (each the
// events of one Append, here three of a third of a MiB each) reads it in
// replies of about redisbackend.ReadBudget bytes, not a page of up to
// 500 elements at once (24 MiB here): its check of the task reads the
// size of the task's events list, and each page takes as many elements
// as the budget holds at the size expected (the average, then the
// largest of the last page), and the element it resumes in. A reply is
// thus at most the budget and two elements. Every event still
// arrives once, in order, with its id, from the first event, after an id
// in the middle of an element (a Last-Event-ID), and up to the task's
// end; and Events returns them so too (it reads its first page, here the
// whole log, before it knows the elements' size: it returns the whole log
// anyway). A task of small events is still read in one round trip after
// the subscription's check of the task.
func TestCatchUpReadsLargeLogsInBoundedReplies(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &replySizes{Client: newClient(t, srv)}
	b := newBackend(t, client, redisbackend.Config{})
	ctx := context.Background()

	const perEvent = 350 << 10 // three make an element of about 1 MiB
	id := newTask().ID
	require.NoError(t, b.Create(ctx, id))
	var want []string // each event's status, "<i>:" then padding
	var wantIDs []string
	largestElement, total := 0, 0
	appendEvents := func(sizes ...int) {
		t.Helper()
		events := make([]progress.Event, len(sizes))
		size := 0
		for i, n := range sizes {
			s := strconv.Itoa(len(want)+i) + ":"
			events[i] = status(s + strings.Repeat("x", max(n-len(s), 0)))
			size += n
		}
		last, err := b.Append(ctx, id, events...)
		require.NoError(t, err)
		// "<n>-<k>-<tag>": the events of the element are k-len+1 to k.
		parts := strings.Split(last, "-")
		require.Len(t, parts, 3, last)
		k, err := strconv.Atoi(parts[1])
		require.NoError(t, err)
		for i, e := range events {
			want = append(want, e.Status)
			wantIDs = append(wantIDs, fmt.Sprintf("%s-%d-%s", parts[0], k-len(events)+1+i, parts[2]))
		}
		largestElement = max(largestElement, size+100*len(sizes))
		total += size
	}
	appendEvents(10)
	for i := range 24 {
		appendEvents(perEvent, perEvent, perEvent)
		if i%5 == 0 {
			appendEvents(20, 30) // small ones between
		}
	}
	appendEvents(10, 10)
	last, err := b.Append(ctx, id, success("done"))
	require.NoError(t, err)
	want = append(want, "done")
	wantIDs = append(wantIDs, last)
	require.Greater(t, total, 4*redisbackend.ReadBudget, "the log is several budgets")
	bound := redisbackend.ReadBudget + 2*largestElement

	check := func(name string, got []progress.Event, from, skip int) {
		t.Helper()
		require.Len(t, got, len(want)-from, "%s: events", name)
		for i, e := range got {
			require.Equal(t, wantIDs[from+i], e.ID, "%s: id of event %d", name, from+i)
			require.Equal(t, want[from+i], e.Status, "%s: event %d", name, from+i)
		}
		assert.True(t, got[len(got)-1].Terminal(), "%s: ends with the terminal event", name)
		replies := client.replies()
		t.Logf("%s: %d replies: %v", name, len(replies), replies)
		if skip == 0 {
			assert.Greater(t, len(replies), 4, "%s: pages of a few MiB", name)
		}
		for i, n := range replies[min(skip, len(replies)):] {
			assert.LessOrEqual(t, n, bound, "%s: reply %d of %v (budget %d and two elements of %d)",
				name, skip+i, replies, redisbackend.ReadBudget, largestElement)
		}
		client.reset()
	}
	// The second event of an element of three in the middle of the log:
	// its id is "<n>-1-<tag>".
	mid := len(want) / 2
	for strings.Split(wantIDs[mid], "-")[1] != "1" {
		mid++
	}
	for _, tc := range []struct {
		name string
		from int
	}{{"from the first event", 0}, {"after an id in the middle of an element", mid + 1}} {
		after := ""
		if tc.from > 0 {
			after = wantIDs[tc.from-1]
		}
		client.reset()
		ch, err := b.Subscribe(ctx, id, after)
		require.NoError(t, err)
		check("Subscribe "+tc.name, collect(t, ch), tc.from, 0)
		events, err := b.Events(ctx, id, after)
		require.NoError(t, err)
		check("Events "+tc.name, events, tc.from, 1)
	}

	// A task of small events: the subscription's check of the task, then
	// one read of the whole log.
	small := newTask().ID
	require.NoError(t, b.Create(ctx, small))
	for i := range 300 {
		_, err := b.Append(ctx, small, status("step "+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	_, err = b.Append(ctx, small, success("done"))
	require.NoError(t, err)
	before := client.trips.Load()
	ch, err := b.Subscribe(ctx, small, "")
	require.NoError(t, err)
	assert.Len(t, collect(t, ch), 301)
	assert.Equal(t, int64(2), client.trips.Load()-before, "round trips of a subscription to 300 small events")
}

// TestCatchUpChecksTheLogBetweenPages: each page of a catch-up after the
// first reads again the element the page before ended with, though the
// subscription delivered all its events: the read checks that element's
// tag, and that check is what tells a log replaced between two pages
// (a failover that lost the page's last elements, and appends that took
// their places) from the same log grown. A page that started after that
// element instead would read only the new log's elements, and deliver
// them as if they followed the lost ones. Here the log is replaced while
// the subscription delivers its first page (of three elements of about
// 1 MiB, as many as redisbackend.ReadBudget holds): it delivers that
// page, then ends, without an event of the new log.
func TestCatchUpChecksTheLogBetweenPages(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const prefix = "pages"
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Prefix: prefix, PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	const perEvent = 350 << 10 // three make an element of about 1 MiB
	id := newTask().ID
	require.NoError(t, b.Create(ctx, id))
	appendElement := func(name string) string {
		t.Helper()
		events := make([]progress.Event, 3)
		for i := range events {
			s := fmt.Sprintf("%s %d:", name, i)
			events[i] = status(s + strings.Repeat("x", perEvent-len(s)))
		}
		last, err := b.Append(ctx, id, events...)
		require.NoError(t, err)
		return last
	}
	tags := map[string]string{} // the tag of each element of the old log, by its n
	tagOf := func(last string) (n, tag string) {
		parts := strings.Split(last, "-")
		require.Len(t, parts, 3, last)
		return parts[0], parts[2]
	}
	n, tag := tagOf(appendElement("old 1"))
	tags[n] = tag
	promote := replicaOf(t, srv, prefix, id) // the replica has element 1
	for i := 2; i <= 8; i++ {
		n, tag := tagOf(appendElement(fmt.Sprintf("old %d", i)))
		tags[n] = tag
	}

	ch, err := b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	next := func() (progress.Event, bool) {
		t.Helper()
		select {
		case e, ok := <-ch:
			return e, ok
		case <-ctx.Done():
			require.FailNow(t, "the subscription neither delivered nor ended")
			return progress.Event{}, false
		}
	}
	first, ok := next()
	require.True(t, ok)
	require.True(t, strings.HasPrefix(first.Status, "old 1 0:"), first.Status[:10])
	// The first page is read (its first event came from it); the log is
	// replaced while it is delivered.
	promote()
	for i := 2; i <= 10; i++ {
		n, tag := tagOf(appendElement(fmt.Sprintf("new %d", i)))
		if tags[n] == tag {
			t.Skipf("element %s of the new log has the tag of the old one's, as once in 36^4", n)
		}
	}
	_, err = b.Append(ctx, id, success("done"))
	require.NoError(t, err)

	got := []string{first.Status[:len("old 1 0")]}
	for {
		e, ok := next()
		if !ok {
			break
		}
		got = append(got, e.Status[:min(len(e.Status), len("old 1 0"))])
	}
	var want []string
	for i := 1; len(want) < len(got) || len(want)%3 != 0; i++ {
		for k := range 3 {
			want = append(want, fmt.Sprintf("old %d %d", i, k))
		}
	}
	assert.Equal(t, want, got, "the old log's first page, whole elements, then the end: no event of the new log")
	assert.GreaterOrEqual(t, len(got), 6, "the first page held two elements at least (the second was lost)")
}

// BenchmarkReadEvents reads a task's whole log, with Events and with a
// subscription to the ended task (its check of the task, then its
// catch-up): small, 300 Appends of one small event each (what most tasks
// have); large, 24 elements of about 1 MiB. It reports the round trips,
// the microseconds Redis spent (INFO commandstats) and the largest reply
// of one round trip.
func BenchmarkReadEvents(b *testing.B) {
	srv := redistest.Start(b)
	client := &replySizes{Client: newClient(b, srv)}
	backend := newBackend(b, client, redisbackend.Config{})
	ctx := context.Background()
	for _, tc := range []struct {
		name          string
		elements, per int
	}{{"small", 300, 60}, {"large", 24, 1 << 20}} {
		id := newTask().ID
		require.NoError(b, backend.Create(ctx, id))
		for i := range tc.elements {
			_, err := backend.Append(ctx, id, status(strconv.Itoa(i)+strings.Repeat("x", tc.per)))
			require.NoError(b, err)
		}
		_, err := backend.Append(ctx, id, success("done"))
		require.NoError(b, err)
		for _, read := range []struct {
			name string
			fn   func() (int, error)
		}{
			{"Events", func() (int, error) {
				events, err := backend.Events(ctx, id, "")
				return len(events), err
			}},
			{"Subscribe", func() (int, error) {
				ch, err := backend.Subscribe(ctx, id, "")
				if err != nil {
					return 0, err
				}
				events, err := drain(ch)
				return len(events), err
			}},
		} {
			b.Run(read.name+"/"+tc.name, func(b *testing.B) {
				client.reset()
				require.NoError(b, srv.Do("CONFIG", "RESETSTAT").Error())
				before := client.trips.Load()
				b.ReportAllocs()
				for b.Loop() {
					if n, err := read.fn(); err != nil || n != tc.elements+1 {
						b.Fatal(n, err)
					}
				}
				b.ReportMetric(float64(client.trips.Load()-before)/float64(b.N), "trips/op")
				b.ReportMetric(redisMicroseconds(b, srv)/float64(b.N), "redis-µs/op")
				b.ReportMetric(float64(slices.Max(client.replies())), "reply-B")
			})
		}
	}
}

// redisMicroseconds returns the microseconds Redis has spent in commands
// since its statistics were reset, from INFO commandstats, leaving out
// CONFIG and INFO.
func redisMicroseconds(t testing.TB, srv *redistest.Server) float64 {
	t.Helper()
	total := 0.0
	for name, usec := range commandStats(t, srv, "usec") {
		if !strings.HasPrefix(name, "config") && name != "info" {
			total += usec
		}
	}
	return total
}
