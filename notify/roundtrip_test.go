package notify_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// joined returns each of trips as its commands joined by "; ".
func joined(trips [][]string) []string {
	out := make([]string, len(trips))
	for i, trip := range trips {
		out[i] = strings.Join(trip, "; ")
	}
	return out
}

// TestNotificationRoundTrips counts the Redis round trips that a
// notification adds to a finished task, on the worker that ends it and
// delivers it (the fetches, shared by the tasks of a batch, aside):
//
//   - the finished task itself: 4 instead of 2, as with any finish hook
//     (the success and the acknowledgement no longer go together, and the
//     final snapshot is read);
//   - the notification's enqueue, with its idempotency key: 1 (one
//     script claims the id and queues the task);
//   - the notification task's run: 4 (start, success, snapshot for the
//     hooks, acknowledgement): it is a task like any other on a worker
//     with hooks.
//
// So one channel costs 2 + 1 + 4 = 7 round trips more per finished task,
// and each further channel 5 more. A hook run again (FoundEnded) costs 2:
// the refused claim and the read that finds the same notification.
func TestNotificationRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	quiet := slog.New(slog.DiscardHandler)
	newBackend := func(c rueidis.Client, prefix string) *redisbackend.Backend {
		b, err := redisbackend.New(c, redisbackend.Config{Prefix: prefix, Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	for _, tt := range []struct {
		name   string
		notify bool
		task   int // round trips naming the finished task
		notif  int // round trips naming its notification task
	}{
		{"no notifications", false, 2, 0},
		{"a webhook per finished task", true, 4, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "rt" + strings.ReplaceAll(tt.name, " ", "")[:6]
			webClient := srv.Client(t)
			workerClient := &redistrips.Client{Client: srv.Client(t), Record: true}
			web := newBackend(webClient, prefix)
			workerSide := newBackend(workerClient, prefix)
			observer := newBackend(srv.Client(t), prefix)
			reg := registry.New()
			broker := queue.NewBroker(web, nil, queue.BrokerConfig{Registry: reg, Logger: quiet})
			startedOnItsOwn := func(ctx context.Context, id string) error {
				for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if snap, _, err := observer.Snapshot(ctx, id); err == nil && snap.State == progress.StateProgress {
						return nil
					}
				}
				return errors.New("the start was not recorded")
			}
			reg.MustRegister("quick", flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
				return "ok", startedOnItsOwn(ctx, task.ID)
			}))
			delivered := make(chan string, 10)
			var hooks []queue.FinishHook
			var notifier *notify.Notifier
			if tt.notify {
				ch := &startWaitingChannel{wait: startedOnItsOwn, delivered: delivered}
				n, err := notify.New(notify.Config{Queue: queue.NewBroker(workerSide, nil, queue.BrokerConfig{Registry: reg, Logger: quiet}), Channels: []notify.Channel{ch}, Logger: quiet})
				require.NoError(t, err)
				require.NoError(t, n.Register(reg))
				hooks = append(hooks, n.Hook())
				notifier = n
			}
			w := queue.NewWorker(workerSide, nil, queue.WorkerConfig{Registry: reg, Concurrency: 1, Logger: quiet, OnFinish: hooks})
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			t.Cleanup(func() {
				stop()
				assert.NoError(t, <-done)
			})

			run := func() (id string, task, notif []string) {
				mark := workerClient.Trips()
				id, err := broker.Enqueue(context.Background(), "quick", nil, queue.EnqueueOptions{})
				require.NoError(t, err)
				nid := notify.NotificationTaskID(notify.ID(id, "webhook"))
				settled := func(id string) bool {
					snap, _, err := observer.Snapshot(context.Background(), id)
					leased, lerr := srv.Do("ZCARD", prefix+":{q:"+web.Queue()+"}:leased").AsInt64()
					return err == nil && snap.State == progress.StateSuccess && lerr == nil && leased == 0
				}
				deadline := time.Now().Add(waitLimit)
				for !settled(id) || tt.notify && !settled(nid) {
					require.False(t, time.Now().After(deadline), "the tasks did not settle")
					time.Sleep(2 * time.Millisecond)
				}
				return id, joined(workerClient.Naming(mark, "{"+id+"}")), joined(workerClient.Naming(mark, "{"+nid+"}"))
			}
			run() // loads the scripts: no NOSCRIPT retry is counted below
			id, task, notif := run()
			t.Logf("the task: %d round trips %q", len(task), task)
			t.Logf("its notification: %d round trips %q", len(notif), notif)
			assert.Len(t, task, tt.task, "round trips naming the finished task")
			assert.Len(t, notif, tt.notif, "round trips naming the notification task")
			if notifier == nil {
				return
			}
			// The hook run again for the same task, by a worker that found
			// it ended.
			mark := workerClient.Trips()
			snap, _, err := observer.Snapshot(context.Background(), id)
			require.NoError(t, err)
			again := queue.Finished{Task: &queue.Task{ID: id, Flow: "quick", Attempt: 2}, Snapshot: snap, EndedAt: time.Now(), FoundEnded: true}
			require.NoError(t, notifier.Hook()(context.Background(), again))
			nid := notify.NotificationTaskID(notify.ID(id, "webhook"))
			rerun := workerClient.Naming(mark, "{"+nid+"}")
			t.Logf("the hook again: %d round trips", len(rerun))
			assert.Len(t, rerun, 2, "a hook run again: the refused claim and the read that finds the notification")
		})
	}
}

// startWaitingChannel delivers once its notification task's start is
// recorded, so that the start takes a round trip of its own.
type startWaitingChannel struct {
	wait      func(ctx context.Context, id string) error
	delivered chan string
}

func (c *startWaitingChannel) Name() string { return "webhook" }

func (c *startWaitingChannel) Deliver(ctx context.Context, n *notify.Notification) error {
	nid := notify.NotificationTaskID(n.ID)
	if err := c.wait(ctx, nid); err != nil {
		return err
	}
	c.delivered <- n.TaskID
	return nil
}
