package redisbackend_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestLeaseCommands counts the commands Redis runs (INFO commandstats,
// script internals included) for each path of a lease on a single Redis.
// A lease is one member of the leases set, its token, scored by its
// deadline: the fetch writes it with one ZADD for all the entries it
// takes, and an end that releases it removes it with one ZREM, which is
// also its check that the lease is still held (there were an HSET of
// the holder in the fetch, and an HMGET or HGET of the holders hash,
// a ZREM and an HDEL in the end).
// trimCommands are the commands of the stream's trim, which a release
// runs when one of its entries is picked by a hash of its id, one in a
// hundred (lib/release.lua): not the release's own cost, and left out
// of what a single release is counted for, or one run in about twenty
// counts it.
var trimCommands = []string{"xpending", "xinfo|groups", "xtrim"}

func TestLeaseCommands(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{})
	ctx := context.Background()
	lease := func() *queue.Lease {
		t.Helper()
		require.NoError(t, b.Enqueue(ctx, newTask()))
		leases, err := b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
		require.Len(t, leases, 1)
		return leases[0]
	}
	for _, tt := range []struct {
		name string
		end  func(l *queue.Lease) error
		want int
		ops  map[string]int
	}{
		{"Extend", func(l *queue.Lease) error { return b.Extend(ctx, l, time.Minute) }, 6,
			map[string]int{"zscore": 1, "zadd": 1, "hget": 1, "hdel": 0}},
		{"Ack", func(l *queue.Lease) error { return b.Ack(ctx, l) }, 4,
			map[string]int{"zrem": 1, "hmget": 0, "hdel": 0}},
		{"Retry", func(l *queue.Lease) error { return b.Retry(ctx, l, time.Now(), queue.EndFailed) }, 7,
			map[string]int{"zrem": 1, "hget": 0, "hdel": 0}},
		{"Bury", func(l *queue.Lease) error { return b.Bury(ctx, l, "dead") }, 9,
			map[string]int{"zrem": 1, "hget": 0, "hdel": 0}},
	} {
		for i := range 2 { // the first loads the scripts
			l := lease()
			n, calls := commandsOf(t, srv, func() { require.NoError(t, tt.end(l)) }, trimCommands...)
			if i == 0 {
				continue
			}
			assert.Equal(t, tt.want, n, "%s: commands: %v", tt.name, calls)
			for op, want := range tt.ops {
				assert.Equal(t, want, calls[op], "%s: %s: %v", tt.name, op, calls)
			}
		}
	}
	// A fetch that takes one new entry: the deadline and the token in
	// one ZADD, no HSET of a holder (the record's HSET comes only with a
	// lease taken over).
	require.NoError(t, b.Enqueue(ctx, newTask()))
	var leases []*queue.Lease
	n, calls := commandsOf(t, srv, func() {
		var err error
		leases, err = b.Fetch(ctx, "w", 1, time.Minute)
		require.NoError(t, err)
	})
	require.Len(t, leases, 1)
	assert.Equal(t, 1, calls["zadd"], "fetch: %v", calls)
	assert.Zero(t, calls["hset"], "fetch: %v", calls)
	assert.Equal(t, 9, n, "fetch: commands: %v", calls)
}

// TestSharedAckChecksEachToken acknowledges three leases in one ack
// script (AckDelay), one of them marked lost meanwhile: one ZMSCORE
// tells which tokens are still in the leases set, one ZREM and one XACK
// release the two held, and the lost one's Ack fails alone, its entry
// still pending for the fetch that takes it over.
func TestSharedAckChecksEachToken(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{AckDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, b.Ack(ctx, leased(t, b, 1, time.Minute)[0])) // loads the script, lingering 100 ms

	leases := leased(t, b, 3, time.Minute)
	markLost(t, srv, b, leases[1], "")
	end, asked := lingerByHand(t)
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	errs := make([]chan error, len(leases))
	for i, l := range leases {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- b.Ack(context.Background(), l) }()
		require.Eventually(t, func() bool { _, acks, _ := b.Waiting(); return acks == i+1 },
			waitLimit, time.Millisecond, "%d acks waiting", i+1)
	}
	<-asked
	end()
	require.NoError(t, <-errs[0])
	require.ErrorIs(t, <-errs[1], queue.ErrLeaseLost, "the lease marked lost")
	require.NoError(t, <-errs[2])
	calls := commandCalls(t, srv)
	assert.Equal(t, 1, calls["evalsha"], "one ack script: %v", calls)
	assert.Equal(t, 1, calls["zmscore"], "the tokens checked together: %v", calls)
	assert.Equal(t, 1, calls["zrem"], "the held ones removed together: %v", calls)
	assert.Equal(t, 1, calls["xack"], "and released together: %v", calls)
	assert.Equal(t, int64(1), pendingEntries(t, srv, b.Prefix()), "the lost lease's entry waits for a fetch")
	left, err := srv.Do("ZCARD", b.Prefix()+":{q:default}:leased").AsInt64()
	require.NoError(t, err)
	assert.Equal(t, int64(1), left, "only the lost lease's token is left")
}
