package redisbackend_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// TestSubscriptionPastAnyListEnds: a subscription after an id past any
// events list (the largest well-formed ids) reads no events but still
// reads the task's state: it ends at once for a finished task, and when
// the task expires for one that is not, though the poll interval would
// not come for an hour.
func TestSubscriptionPastAnyListEnds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBackend(t, newClient(t, srv), redisbackend.Config{Retention: time.Second, PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, after := range []string{"18446744073709551615-18446744073709551615", "9223372036854775807-0"} {
		for _, finished := range []bool{true, false} {
			id := newTask().ID
			require.NoError(t, b.Create(ctx, id))
			if finished {
				_, err := b.Append(ctx, id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "done"})
				require.NoError(t, err)
			}
			ch, err := b.Subscribe(context.Background(), id, after)
			require.NoError(t, err)
			select {
			case e, ok := <-ch:
				assert.False(t, ok, "after %s (finished %v): nothing to deliver, got %+v", after, finished, e)
			case <-ctx.Done():
				require.FailNow(t, "the subscription did not end", "after %s (finished %v)", after, finished)
			}
		}
	}
}

// TestSubscriptionOfADeletedTaskEnds: when the backend deletes a task's
// record (a start it takes back), it tells the task's live
// subscriptions, which end then, not at their next poll (an hour here),
// and log nothing about the message. On a single Redis and on a Cluster.
func TestSubscriptionOfADeletedTaskEnds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) rueidis.Client
	}{
		{"Redis", func(t *testing.T) rueidis.Client { return newClient(t, redistest.Start(t)) }},
		{"Cluster", func(t *testing.T) rueidis.Client {
			return newClusterClient(t, redistest.StartCluster(t, redistest.ClusterOptions{}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &logBuffer{}
			b := newBackend(t, tc.client(t), redisbackend.Config{
				PollInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			id := newTask().ID
			require.NoError(t, b.Create(ctx, id))
			_, err := b.Append(ctx, id, progress.LogEvent("working"))
			require.NoError(t, err)
			ch, err := b.Subscribe(context.Background(), id, "")
			require.NoError(t, err)
			select {
			case e := <-ch:
				require.Equal(t, "working", e.Step.Message)
			case <-ctx.Done():
				require.FailNow(t, "the event did not arrive")
			}

			require.NoError(t, redisbackend.DeleteTask(ctx, b, id))
			select {
			case e, ok := <-ch:
				assert.False(t, ok, "nothing more to deliver, got %+v", e)
			case <-ctx.Done():
				require.FailNow(t, "the subscription of the deleted task did not end")
			}
			assert.NotContains(t, logs.String(), "undecodable")
		})
	}
}
