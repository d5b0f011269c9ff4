package smtp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/notify/smtp"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

const waitLimit = 30 * time.Second

// engine is a broker and a worker on one backend, with their logs
// captured.
type engine struct {
	broker *queue.Broker
	reg    *registry.Registry
	logs   *syncbuf.Buffer
	logger *slog.Logger
	start  func(t *testing.T)
}

func newEngine(t *testing.T, kind string) *engine {
	t.Helper()
	e := &engine{reg: registry.New(), logs: &syncbuf.Buffer{}}
	e.logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var backend queue.Backend
	var store progress.Store
	switch kind {
	case "memory":
		backend, store = queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
	case "redis":
		srv := redistest.Start(t)
		var b [6]byte
		_, _ = rand.Read(b[:])
		rb, err := redisbackend.New(srv.Client(t), redisbackend.Config{Prefix: "m" + hex.EncodeToString(b[:]), Logger: e.logger})
		require.NoError(t, err)
		t.Cleanup(func() { _ = rb.Close() })
		backend, store = rb, rb
	}
	e.broker = queue.NewBroker(backend, store, queue.BrokerConfig{Registry: e.reg})
	e.start = func(t *testing.T) {
		w := queue.NewWorker(backend, store, queue.WorkerConfig{Registry: e.reg, Logger: e.logger, Backoff: func(int) time.Duration { return 10 * time.Millisecond }})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(waitLimit):
				t.Error("the worker did not stop")
			}
		})
	}
	return e
}

func (e *engine) waitEnded(t *testing.T, id string) *queue.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		info, err := e.broker.Task(context.Background(), id)
		require.NoError(t, err)
		if info.Snapshot.State.Terminal() {
			return info
		}
		require.False(t, time.Now().After(deadline), "task %s did not end: %+v", id, info.Snapshot)
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *engine) dead(t *testing.T, id string) queue.DeadTask {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		dead, err := e.broker.Dead(context.Background(), 0)
		require.NoError(t, err)
		for _, d := range dead {
			if d.ID == id {
				return d
			}
		}
		require.False(t, time.Now().After(deadline), "task %s is not dead: %+v", id, dead)
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNotificationByEmail: a notification task delivers the e-mail
// through a worker; with the server down it is retried, then buried with
// a reason that says why, and the password is nowhere.
func TestNotificationByEmail(t *testing.T) {
	for _, kind := range []string{"memory", "redis"} {
		t.Run(kind, func(t *testing.T) {
			e := newEngine(t, kind)
			ms := startMailServer(t, serverOptions{User: "flows", Pass: "planted-smtp-pass", AllowInsecureAuth: true}, nil)
			up := newSender(t, smtp.Config{Name: "email", URL: "smtp://flows:planted-smtp-pass@" + ms.addr, Logger: e.logger})

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			downAddr := ln.Addr().String()
			require.NoError(t, ln.Close())
			down := newSender(t, smtp.Config{Name: "down", URL: "smtp://flows:planted-smtp-pass@" + downAddr, Logger: e.logger})

			n, err := notify.New(notify.Config{Queue: e.broker, Channels: []notify.Channel{up, down}, MaxAttempts: 3, Logger: e.logger})
			require.NoError(t, err)
			require.NoError(t, n.Register(e.reg))
			e.start(t)
			ended := *sample()
			ended.ID, ended.Channel = "", ""
			ids, err := n.Notify(context.Background(), ended)
			require.NoError(t, err)
			require.Len(t, ids, 2)

			sent := e.waitEnded(t, ids[0])
			assert.Equal(t, progress.StateSuccess, sent.Snapshot.State, sent.Snapshot.Details.Status)
			got := ms.received()
			require.Len(t, got, 1)
			p := parse(t, got[0].Data)
			assert.Equal(t, "<msg_"+taskID+"_email@example.com>", p.Header.Get("Message-Id"))

			failed := e.waitEnded(t, ids[1])
			assert.Equal(t, progress.StateFailure, failed.Snapshot.State)
			assert.Equal(t, 3, failed.Task.Attempt, "retried until the attempts were spent")
			d := e.dead(t, ids[1])
			assert.True(t, strings.HasPrefix(d.Reason, "failed after 3 attempts: smtp down (smtp://flows:xxxxx@"+downAddr+"): "), d.Reason)
			assert.Contains(t, d.Reason, "connection refused")
			for _, text := range []string{d.Reason, failed.Snapshot.Details.Status, e.logs.String()} {
				assert.NotContains(t, text, "planted-smtp-pass")
			}
			retries := 0
			for _, s := range failed.Snapshot.Details.StepResults {
				if strings.Contains(s.Message, "; retrying in") {
					retries++
				}
			}
			assert.Equal(t, 2, retries)
		})
	}
}

// TestFlowSendsAsAStep: a flow sends an e-mail as one of its steps.
func TestFlowSendsAsAStep(t *testing.T) {
	e := newEngine(t, "memory")
	ms := startMailServer(t, serverOptions{}, nil)
	sender := newSender(t, smtp.Config{URL: "smtp://" + ms.addr, To: []string{"reader@example.net"}})
	type reportInput struct {
		Topic string `json:"topic"`
	}
	e.reg.MustRegister("report", flow.Typed(func(ctx context.Context, in reportInput, t *flow.Task) (string, error) {
		t.Progress.Progress(50, "Writing the report")
		report := "Everything about " + in.Topic + "."
		t.Progress.Status("Sending the report")
		if err := sender.Send(ctx, smtp.Message{Subject: "Report: " + in.Topic, Text: report, ID: t.ID + "-report"}); err != nil {
			return "", err
		}
		t.Progress.Log("report sent by e-mail")
		return report, nil
	}))
	e.start(t)
	id, err := e.broker.Enqueue(context.Background(), "report", []byte(`{"topic":"tides"}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	info := e.waitEnded(t, id)
	require.Equal(t, progress.StateSuccess, info.Snapshot.State, info.Snapshot.Details.Status)
	got := ms.received()
	require.Len(t, got, 1)
	assert.Equal(t, []string{"reader@example.net"}, got[0].To)
	assert.Contains(t, string(got[0].Data), "Subject: Report: tides")
	assert.Contains(t, string(got[0].Data), "<"+id+"-report@example.com>")
}
