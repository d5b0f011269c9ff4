package redisbackend_test

import (
	"context"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestUnsubscribeWhileSavesFail: a watcher leaves while Redis refuses
// writes because it cannot save to disk (MISCONF: a failed RDB save with
// stop-writes-on-bgsave-error, or a failed AOF write), a state in which
// it refuses PING too. The watcher's channel is no longer subscribed in
// the end, the other watcher still receives, and closing the backend
// while Redis refuses PING ends the connection cleanly.
//
// rueidis (1.0.79 and 1.0.80) sends a PING after each SUNSUBSCRIBE and
// takes an error reply to it (other than LOADING, BUSY or NOPERM) for the
// SUNSUBSCRIBE's own, then waits for a PONG that never comes: the next
// error reply on the connection (to the PING of its Close, or of its
// keep-alive) panics ("protocol bug, message handled out of order") in
// its reading goroutine, which ends the process. The hub therefore sends
// no SUNSUBSCRIBE: it replaces its connection by one without the channel
// (here at once, SetDeadChannels), and closes the old one, under MISCONF.
func TestUnsubscribeWhileSavesFail(t *testing.T) {
	t.Parallel()
	eachProtocol(t, func(t *testing.T, srv *redistest.Server, opt rueidis.ClientOption) {
		b, err := redisbackend.New(testClient(t, opt), redisbackend.Config{Prefix: uniquePrefix(t)})
		require.NoError(t, err)
		redisbackend.SetDeadChannels(b, 0, 0)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()

		stays, leaves := newTask().ID, newTask().ID
		for _, id := range []string{stays, leaves} {
			require.NoError(t, b.Create(ctx, id))
			_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Started"})
			require.NoError(t, err)
		}
		staying, err := b.Subscribe(ctx, stays, "")
		require.NoError(t, err)
		<-staying // the backlog: the subscription is up
		leaveCtx, leave := context.WithCancel(ctx)
		leaving, err := b.Subscribe(leaveCtx, leaves, "")
		require.NoError(t, err)
		<-leaving
		require.Len(t, subscribedClients(t, srv), 1)
		require.Equal(t, "2", subscribedClients(t, srv)[0]["ssub"])

		repair := srv.FailSaves(t)
		require.Error(t, srv.Do("PING").Error(), "Redis refuses PING while its saves fail")
		leave()
		collect(t, leaving)
		eventually(t, func() bool {
			subs := subscribedClients(t, srv)
			return len(subs) == 1 && subs[0]["ssub"] == "1"
		}, "the channel of the watcher that left is unsubscribed")

		repair()
		_, err = b.Append(ctx, stays, progress.LogEvent("still here"))
		require.NoError(t, err)
		got := collectN(t, staying, 1)
		assert.Equal(t, "still here", got[0].Step.Message, "the watcher that stays still receives")

		srv.FailSaves(t)
		require.Error(t, srv.Do("PING").Error(), "Redis refuses PING while its saves fail")
		require.NoError(t, b.Close())
		_, _ = drain(staying) // closed with the backend
	})
}
