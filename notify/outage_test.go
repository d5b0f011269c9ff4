package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/queue"
)

// awayQueue is a broker that answers as a backend that cannot be reached
// until up is closed: at once, refused (queue.ErrUnavailable), or, with
// hang set, as one that does not answer, once the caller's context has
// ended, with the context's error, as redisbackend gives it for the
// caller's own deadline. gaveUp is closed when the context of the first
// call that failed ends: the hook that made it has given up.
type awayQueue struct {
	*queue.Broker
	hang   bool
	up     chan struct{}
	once   sync.Once
	gaveUp chan struct{}
}

func (q *awayQueue) Enqueue(ctx context.Context, flowName string, inputs json.RawMessage, opts queue.EnqueueOptions) (string, error) {
	select {
	case <-q.up:
		return q.Broker.Enqueue(ctx, flowName, inputs, opts)
	default:
	}
	q.once.Do(func() {
		go func() {
			<-ctx.Done()
			close(q.gaveUp)
		}()
	})
	if q.hang {
		select {
		case <-q.up:
			return q.Broker.Enqueue(ctx, flowName, inputs, opts)
		case <-ctx.Done():
			return "", fmt.Errorf("redisbackend: enqueue task: %w", ctx.Err())
		}
	}
	return "", fmt.Errorf("%w: connection refused", queue.ErrUnavailable)
}

// TestHookOutlastsAnOutage: a queue away for longer than the hooks' time
// loses no notification: the hook asks to run again later
// (queue.ErrRetryHooks), and the worker's next run of it enqueues the
// notification, which is delivered once. So for a queue that refuses at
// once and for one that does not answer, whose last call the end of the
// hooks' time cuts (a context error, not queue.ErrUnavailable).
func TestHookOutlastsAnOutage(t *testing.T) {
	for _, hang := range []bool{false, true} {
		for _, kind := range backendKinds {
			t.Run(fmt.Sprintf("%s/hang=%v", kind, hang), func(t *testing.T) {
				testHookOutlastsAnOutage(t, kind, hang)
			})
		}
	}
}

// testHookOutlastsAnOutage is TestHookOutlastsAnOutage on a backend of
// kind, with a queue that hangs or refuses.
func testHookOutlastsAnOutage(t *testing.T, kind string, hang bool) {
	s := newSystem(t, kind)
	s.reg.MustRegister("work", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	q := &awayQueue{Broker: s.broker, hang: hang, up: make(chan struct{}), gaveUp: make(chan struct{})}
	n, err := notify.New(notify.Config{Queue: q, Logger: s.logger, Channels: []notify.Channel{newTestWebhook(t, rc, secret, 0)}})
	require.NoError(t, err)
	require.NoError(t, n.Register(s.reg))
	w := queue.NewWorker(s.backend, s.store, queue.WorkerConfig{
		Registry: s.reg, Logger: s.logger, OnFinish: []queue.FinishHook{n.Hook()},
		FinishHookTimeout: 200 * time.Millisecond,
		Backoff:           func(int) time.Duration { return 10 * time.Millisecond },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	id, err := s.broker.Enqueue(context.Background(), "work", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	<-q.gaveUp
	close(q.up)
	s.waitNotification(t, notify.NotificationTaskID(notify.ID(id, "webhook")))
	got := rc.requests()
	require.Len(t, got, 1)
	assert.Equal(t, notify.ID(id, "webhook"), got[0].ID)
}
