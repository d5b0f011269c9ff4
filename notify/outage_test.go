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
// until up is closed. gaveUp is closed when the context of the first
// refused call ends: the hook that made it has given up.
type awayQueue struct {
	*queue.Broker
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
	return "", fmt.Errorf("%w: connection refused", queue.ErrUnavailable)
}

// TestHookOutlastsAnOutage: a queue away for longer than the hooks' time
// loses no notification: the hook asks to run again later
// (queue.ErrRetryHooks), and the worker's next run of it enqueues the
// notification, which is delivered once.
func TestHookOutlastsAnOutage(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			s.reg.MustRegister("work", flow.Func(func(context.Context, *flow.Task) (any, error) { return "done", nil }))
			secret := notify.NewSecret()
			rc := newReceiver(t, secret)
			q := &awayQueue{Broker: s.broker, up: make(chan struct{}), gaveUp: make(chan struct{})}
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
		})
	}
}
