package notify_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

const waitLimit = 30 * time.Second

// system is a broker and a worker on one backend, with the logs of both
// captured, running notification tasks.
type system struct {
	backend queue.Backend
	store   progress.Store
	broker  *queue.Broker
	reg     *registry.Registry
	logs    *syncbuf.Buffer
	logger  *slog.Logger
}

// backendKinds names the backends the delivery tests run on.
var backendKinds = []string{"memory", "redis"}

// newSystem returns a system on the named backend; the worker is not
// started (see run).
func newSystem(t *testing.T, kind string) *system {
	t.Helper()
	s := &system{reg: registry.New(), logs: &syncbuf.Buffer{}}
	s.logger = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	switch kind {
	case "memory":
		s.backend = queue.NewMemory(queue.MemoryConfig{})
		s.store = progress.NewMemoryStore(progress.MemoryConfig{})
	case "redis":
		srv := redistest.Start(t)
		var b [6]byte
		_, _ = rand.Read(b[:])
		rb, err := redisbackend.New(srv.Client(t), redisbackend.Config{Prefix: "n" + hex.EncodeToString(b[:]), Logger: s.logger})
		require.NoError(t, err)
		t.Cleanup(func() { _ = rb.Close() })
		s.backend, s.store = rb, rb
	default:
		t.Fatalf("unknown backend %q", kind)
	}
	s.broker = queue.NewBroker(s.backend, s.store, queue.BrokerConfig{Registry: s.reg})
	return s
}

// notifier makes a Notifier of channels on s and registers its flow.
func (s *system) notifier(t *testing.T, cfg notify.Config) *notify.Notifier {
	t.Helper()
	cfg.Queue = s.broker
	cfg.Logger = s.logger
	n, err := notify.New(cfg)
	require.NoError(t, err)
	require.NoError(t, n.Register(s.reg))
	return n
}

// run runs a worker on s until the test ends, retrying failed tasks
// after backoff.
func (s *system) run(t *testing.T, backoff time.Duration, hooks ...queue.FinishHook) {
	t.Helper()
	stop := s.runWith(t, s.reg, backoff, hooks...)
	t.Cleanup(stop)
}

// runWith runs a worker of the flows of reg on s, retrying failed tasks
// after backoff, until stop is called; stop returns once the worker has.
func (s *system) runWith(t *testing.T, reg *registry.Registry, backoff time.Duration, hooks ...queue.FinishHook) (stop func()) {
	t.Helper()
	w := queue.NewWorker(s.backend, s.store, queue.WorkerConfig{
		Registry: reg, Concurrency: 4, Logger: s.logger,
		Backoff:  func(int) time.Duration { return backoff },
		OnFinish: hooks,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitLimit):
			t.Error("the worker did not stop")
		}
	}
}

// waitEnded waits for task id to end and returns it.
func (s *system) waitEnded(t *testing.T, id string) *queue.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := s.broker.Task(context.Background(), id)
		require.NoError(t, err)
		if info.Snapshot.State.Terminal() {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not end: %+v\nlogs:\n%s", id, info.Snapshot, s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dead returns the dead-letter entry of task id, failing the test when
// there is none.
func (s *system) dead(t *testing.T, id string) queue.DeadTask {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		dead, err := s.broker.Dead(context.Background(), 0)
		require.NoError(t, err)
		for _, d := range dead {
			if d.ID == id {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is not in the dead-letter set: %+v", id, dead)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
