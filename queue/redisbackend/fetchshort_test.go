package redisbackend_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// shortFetch is the context of the Fetches below that must return what
// is ready: far shorter than a wait of a Fetch (up to a second), as the
// conformance suite's judge fetches with.
const shortFetch = 20 * time.Millisecond

// TestShortFetchReturnsWhatIsReady checks that a Fetch with a short
// context returns a task that is ready, whatever its worker's last Fetch
// planned: none (it looks at once), a wait of up to a second (its last
// Fetch found nothing, and ended on its deadline), with or without
// Config.FetchDelay, for a task of a flow without limits and one of a
// flow with a rate (its entry, let through by the admit script, carries
// the field the fetch script scores).
func TestShortFetchReturnsWhatIsReady(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv)
	for _, tc := range []struct {
		name  string
		cfg   redisbackend.Config
		limit queue.Limit
	}{
		{"default", redisbackend.Config{}, queue.Limit{}},
		{"FetchDelay", redisbackend.Config{FetchDelay: 50 * time.Millisecond}, queue.Limit{}},
		{"rate", redisbackend.Config{}, queue.Limit{Rate: 1000, Per: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, client, tc.cfg)
			ctx := context.Background()
			for i := range 10 {
				worker := "w" + strconv.Itoa(i)
				if i%2 == 1 {
					// A look that finds nothing, then a wait cut by the
					// deadline: the worker's plan says to wait.
					leases, err := shortFetchAs(b, worker)
					require.ErrorIs(t, err, context.DeadlineExceeded)
					require.Empty(t, leases)
				}
				task := newTask()
				task.Limit = tc.limit
				require.NoError(t, b.Enqueue(ctx, task))
				leases, err := shortFetchAs(b, worker)
				require.NoError(t, err, "round %d", i)
				require.Len(t, leases, 1, "round %d", i)
				assert.Equal(t, task.ID, leases[0].Task.ID)
				require.NoError(t, b.Ack(ctx, leases[0]))
			}
		})
	}
}

// TestShortFetchEndedInItsWaitStrandsNothing ends Fetches during their
// wait (the blocking XREAD) while a task is enqueued, by the deadline
// and by a cancel: each returns the task's lease, or its context's error
// and no lease, and then the task is delivered to no one (no entry
// pending) and the next Fetch, with a short context too, returns it.
func TestShortFetchEndedInItsWaitStrandsNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	prefix := b.Prefix()
	for _, how := range []string{"deadline", "cancel"} {
		t.Run(how, func(t *testing.T) {
			for i := range 10 {
				fctx, cancel := context.WithTimeout(ctx, shortFetch)
				if how == "cancel" {
					cancel()
					fctx, cancel = context.WithCancel(ctx)
				}
				type result struct {
					leases []*queue.Lease
					err    error
				}
				done := make(chan result, 1)
				go func() {
					leases, err := b.Fetch(fctx, "waiting", 1, time.Hour)
					done <- result{leases, err}
				}()
				waitBlocked(t, srv, done)
				task := newTask()
				require.NoError(t, b.Enqueue(ctx, task))
				cancel()
				r := <-done
				if len(r.leases) == 1 {
					assert.Equal(t, task.ID, r.leases[0].Task.ID)
					require.NoError(t, b.Ack(ctx, r.leases[0]))
					continue
				}
				require.Error(t, r.err, "round %d: no lease and no error", i)
				require.Empty(t, r.leases)
				require.Zero(t, pendingEntries(t, srv, prefix), "round %d: an entry delivered to a Fetch that returned none", i)
				leases, err := shortFetchAs(b, "next")
				require.NoError(t, err, "round %d", i)
				require.Len(t, leases, 1, "round %d", i)
				assert.Equal(t, task.ID, leases[0].Task.ID)
				require.NoError(t, b.Ack(ctx, leases[0]))
			}
		})
	}
}

// shortFetchAs fetches one task for worker with a context of shortFetch.
func shortFetchAs(b *redisbackend.Backend, worker string) ([]*queue.Lease, error) {
	ctx, cancel := context.WithTimeout(context.Background(), shortFetch)
	defer cancel()
	return b.Fetch(ctx, worker, 1, time.Hour)
}

// waitBlocked waits until a client of srv is blocked (a Fetch waits in
// its XREAD) or done holds a result (the Fetch returned without waiting,
// as one whose deadline passed in its first look may), and leaves done
// as it was. The tests that call it run nothing else on srv meanwhile.
func waitBlocked[T any](t *testing.T, srv *redistest.Server, done chan T) {
	t.Helper()
	eventually(t, func() bool {
		select {
		case r := <-done:
			done <- r
			return true
		default:
		}
		info, err := srv.Do("INFO", "clients").ToString()
		require.NoError(t, err)
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "blocked_clients:"); ok {
				return v != "0"
			}
		}
		return false
	}, "no Fetch waits")
}

// TestShortFetchLooksAfterALateDelay has a Fetch with a short context let
// tasks gather (Config.FetchDelay, its worker taking tasks fast) with a
// sleep that ends after the context's deadline, as a sleep of half the
// time left may on a loaded machine: the sleep's timer fired late (the
// sleep reports it slept), or the deadline came first (it reports that
// ctx ended). The Fetch still looks, once, and returns the task that was
// ready, where it returned the context's error without looking. A Fetch
// whose context is cancelled in its sleep still leases nothing (see
// TestFetchCancelledInItsDelayLeasesNothing).
func TestShortFetchLooksAfterALateDelay(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{FetchDelay: time.Hour})
	ctx := context.Background()
	for _, slept := range []bool{true, false} {
		worker := "w" + strconv.FormatBool(slept)
		// A task taken: the worker's pace lets the delay pass, and its
		// plan says to wait.
		require.NoError(t, b.Enqueue(ctx, newTask()))
		first, err := b.Fetch(ctx, worker, 4, time.Minute)
		require.NoError(t, err)
		require.Len(t, first, 1)

		task := newTask()
		require.NoError(t, b.Enqueue(ctx, task))
		sleeps := 0
		restore := redisbackend.SetFetchSleep(func(ctx context.Context, d time.Duration) bool {
			sleeps++
			<-ctx.Done()
			return slept
		})
		leases, err := shortFetchAs(b, worker)
		restore()
		require.Equal(t, 1, sleeps, "slept %v: the Fetch let tasks gather", slept)
		require.NoError(t, err, "slept %v: the Fetch looked", slept)
		require.Len(t, leases, 1, "slept %v", slept)
		assert.Equal(t, task.ID, leases[0].Task.ID)
	}
}
