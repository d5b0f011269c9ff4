package redisbackend_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// flowsNamed returns a registry of flows, under names, that accept any
// inputs and do nothing: for Brokers of tasks no worker runs.
func flowsNamed(names ...string) *registry.Registry {
	reg := registry.New()
	for _, name := range names {
		reg.MustRegister(name, flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	}
	return reg
}

// waitLimit bounds every wait of these tests, so that a bug fails a test
// instead of hanging it; it is a guard, not a measurement.
const waitLimit = 30 * time.Second

// eventually polls cond until it holds, failing the test after waitLimit.
func eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	eventuallyWithin(t, waitLimit, cond, msg)
}

// eventuallyWithin is eventually with a guard of limit instead of
// waitLimit, for a condition that takes several of the backend's own
// delays to come.
func eventuallyWithin(t testing.TB, limit time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(t, "condition not met in time", msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// collect reads ch until it is closed.
func collect(t testing.TB, ch <-chan progress.Event) []progress.Event {
	t.Helper()
	got, err := drain(ch)
	require.NoError(t, err)
	return got
}

// drain is collect for a goroutine other than the test's: it returns an
// error when the subscription does not end within waitLimit.
func drain(ch <-chan progress.Event) ([]progress.Event, error) {
	var got []progress.Event
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return got, nil
			}
			got = append(got, e)
		case <-timeout.C:
			return got, fmt.Errorf("subscription did not end: got %d events", len(got))
		}
	}
}

func ids(events []progress.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// pendingEntries returns how many entries of the default queue of prefix
// are in its consumer group's pending list: leased and not released.
// markLost marks l's lease lost, as lib/reclaim.lua does when its worker
// is found dead: its token in the queue "default"'s leases set is replaced
// by one whose holder is "lost/1", with the score deadline ("" keeps the
// lease's).
func markLost(t *testing.T, srv *redistest.Server, b *redisbackend.Backend, l *queue.Lease, deadline string) {
	t.Helper()
	leases := b.Prefix() + ":{q:default}:leased"
	if deadline == "" {
		var err error
		deadline, err = srv.Do("ZSCORE", leases, l.Token).ToString()
		require.NoError(t, err)
	}
	entry, _, _ := strings.Cut(l.Token, "/")
	n, err := srv.Do("ZREM", leases, l.Token).AsInt64()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the lease is held")
	require.NoError(t, srv.Do("ZADD", leases, deadline, entry+"/lost/1").Error())
}

func pendingEntries(t *testing.T, srv *redistest.Server, prefix string) int64 {
	t.Helper()
	pending, err := srv.Do("XPENDING", prefix+":{q:default}:stream", "workers").ToArray()
	require.NoError(t, err)
	n, err := pending[0].AsInt64()
	require.NoError(t, err)
	return n
}
