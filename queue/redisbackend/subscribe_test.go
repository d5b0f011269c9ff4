package redisbackend_test

import (
	"context"
	"testing"
	"time"

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
