package notify_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// recordingChannel is a Channel that keeps what it is asked to deliver.
type recordingChannel struct {
	name string
	mu   sync.Mutex
	got  []notify.Notification
	err  error
}

func (c *recordingChannel) Name() string { return c.name }

func (c *recordingChannel) Deliver(ctx context.Context, n *notify.Notification) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, *n)
	return c.err
}

// recordingQueue is an Enqueuer that keeps what it is given.
type recordingQueue struct {
	mu    sync.Mutex
	flows []string
	in    []notify.Notification
	opts  []queue.EnqueueOptions
	err   error
}

func (q *recordingQueue) Enqueue(ctx context.Context, flowName string, inputs json.RawMessage, opts queue.EnqueueOptions) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	var n notify.Notification
	if err := json.Unmarshal(inputs, &n); err != nil {
		return "", err
	}
	q.flows = append(q.flows, flowName)
	q.in = append(q.in, n)
	q.opts = append(q.opts, opts)
	return queue.NewID(), nil
}

func TestNewErrors(t *testing.T) {
	q := &recordingQueue{}
	a := &recordingChannel{name: "a"}
	tests := []struct {
		name string
		cfg  notify.Config
		want error
	}{
		{"no queue", notify.Config{Channels: []notify.Channel{a}}, notify.ErrInvalidConfig},
		{"no channel", notify.Config{Queue: q}, notify.ErrInvalidConfig},
		{"nil channel", notify.Config{Queue: q, Channels: []notify.Channel{nil}}, notify.ErrInvalidChannel},
		{"bad name", notify.Config{Queue: q, Channels: []notify.Channel{&recordingChannel{name: "has.dot"}}}, notify.ErrInvalidChannel},
		{"same name twice", notify.Config{Queue: q, Channels: []notify.Channel{a, &recordingChannel{name: "a"}}}, notify.ErrInvalidChannel},
		{"negative attempts", notify.Config{Queue: q, Channels: []notify.Channel{a}, MaxAttempts: -1}, notify.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := notify.New(tt.cfg)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestNotifyEnqueuesOnePerChannel(t *testing.T) {
	q := &recordingQueue{}
	n, err := notify.New(notify.Config{Queue: q, Channels: []notify.Channel{&recordingChannel{name: "email"}, &recordingChannel{name: "webhook"}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"email", "webhook"}, n.Channels())
	ended := *sampleNotification("")
	ids, err := n.Notify(context.Background(), ended)
	require.NoError(t, err)
	assert.Len(t, ids, 2)
	assert.Equal(t, []string{notify.FlowName, notify.FlowName}, q.flows)
	require.Len(t, q.in, 2)
	for i, ch := range []string{"email", "webhook"} {
		assert.Equal(t, ch, q.in[i].Channel)
		assert.Equal(t, notify.ID(ended.TaskID, ch), q.in[i].ID)
		assert.JSONEq(t, string(ended.Snapshot.Details.FinalResult), string(q.in[i].Snapshot.Details.FinalResult))
		assert.Equal(t, notify.DefaultMaxAttempts, q.opts[i].MaxAttempts)
		assert.Equal(t, notify.DefaultTimeout, q.opts[i].Timeout)
	}
}

// TestNotifyDoesNotRecurse: the end of a notification task is never
// notified about.
func TestNotifyDoesNotRecurse(t *testing.T) {
	q := &recordingQueue{}
	n, err := notify.New(notify.Config{Queue: q, Channels: []notify.Channel{&recordingChannel{name: "webhook"}}})
	require.NoError(t, err)
	ended := *sampleNotification("")
	ended.Flow = notify.FlowName
	ids, err := n.Notify(context.Background(), ended)
	require.NoError(t, err)
	assert.Empty(t, ids)
	assert.Empty(t, q.in)
}

func TestNotifyFilterAndErrors(t *testing.T) {
	q := &recordingQueue{}
	n, err := notify.New(notify.Config{
		Queue:    q,
		Channels: []notify.Channel{&recordingChannel{name: "email"}, &recordingChannel{name: "webhook"}},
		Filter: func(n *notify.Notification) bool {
			return n.Channel == "webhook" || n.State == progress.StateFailure // e-mail only about failures
		},
	})
	require.NoError(t, err)
	ids, err := n.Notify(context.Background(), *sampleNotification(""))
	require.NoError(t, err)
	assert.Len(t, ids, 1)
	assert.Equal(t, "webhook", q.in[0].Channel)

	running := *sampleNotification("")
	running.State = progress.StateProgress
	_, err = n.Notify(context.Background(), running)
	assert.ErrorContains(t, err, "not finished")

	q.err = errors.New("redis down")
	_, err = n.Notify(context.Background(), *sampleNotification(""))
	assert.ErrorContains(t, err, "redis down")
}

// flakyQueue fails its first calls as a backend that cannot be reached.
type flakyQueue struct {
	recordingQueue
	failures int
}

func (q *flakyQueue) Enqueue(ctx context.Context, flowName string, inputs json.RawMessage, opts queue.EnqueueOptions) (string, error) {
	q.mu.Lock()
	if q.failures > 0 {
		q.failures--
		q.mu.Unlock()
		return "", fmt.Errorf("%w: connection refused", queue.ErrUnavailable)
	}
	q.mu.Unlock()
	return q.recordingQueue.Enqueue(ctx, flowName, inputs, opts)
}

// TestHookWaitsOutAnOutage: the hook tries again while the queue is
// unavailable, within its context; other errors are returned at once.
func TestHookWaitsOutAnOutage(t *testing.T) {
	q := &flakyQueue{failures: 3}
	n, err := notify.New(notify.Config{Queue: q, Channels: []notify.Channel{&recordingChannel{name: "webhook"}}})
	require.NoError(t, err)
	f := queue.Finished{
		Task:     &queue.Task{ID: "t1", Flow: "greet", Attempt: 1},
		Snapshot: progress.Snapshot{State: progress.StateSuccess},
		EndedAt:  time.Now(),
	}
	require.NoError(t, n.Hook()(context.Background(), f))
	assert.Len(t, q.in, 1, "enqueued once the queue was back")

	q.failures = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = n.Hook()(ctx, f)
	assert.ErrorIs(t, err, queue.ErrUnavailable, "given up when the hooks' time is up")
	assert.ErrorIs(t, err, queue.ErrRetryHooks, "to be run again later")

	q.failures, q.err = 0, errors.New("inputs too large")
	err = n.Hook()(context.Background(), f)
	assert.ErrorContains(t, err, "inputs too large")
	assert.NotErrorIs(t, err, queue.ErrRetryHooks, "an error no later run fixes")
}

func TestRegisterIsInternal(t *testing.T) {
	n, err := notify.New(notify.Config{Queue: &recordingQueue{}, Channels: []notify.Channel{&recordingChannel{name: "a"}}})
	require.NoError(t, err)
	reg := registry.New()
	require.NoError(t, n.Register(reg))
	e, err := reg.Lookup(notify.FlowName)
	require.NoError(t, err)
	assert.True(t, e.Internal, "clients cannot start it")
	assert.Empty(t, reg.List())
	assert.ErrorIs(t, n.Register(reg), registry.ErrDuplicate)
}

// TestDeliveryFlow: the delivery flow hands the notification to its
// channel, refuses inputs it cannot read without retrying them, and
// leaves a channel it lacks to a retry.
func TestDeliveryFlow(t *testing.T) {
	ch := &recordingChannel{name: "a"}
	n, err := notify.New(notify.Config{Queue: &recordingQueue{}, Channels: []notify.Channel{ch}})
	require.NoError(t, err)
	reg := registry.New()
	require.NoError(t, n.Register(reg))
	e, err := reg.Lookup(notify.FlowName)
	require.NoError(t, err)
	run := func(inputs string) (any, error) {
		return e.Flow.Run(context.Background(), &flow.Task{ID: "n1", Flow: notify.FlowName, Attempt: 1, Inputs: json.RawMessage(inputs), Progress: progress.Discard})
	}
	want := sampleNotification("a")
	inputs, err := json.Marshal(want)
	require.NoError(t, err)
	_, err = run(string(inputs))
	require.NoError(t, err)
	require.Len(t, ch.got, 1)
	assert.Equal(t, want.ID, ch.got[0].ID)
	assert.True(t, want.FinishedAt.Equal(ch.got[0].FinishedAt))

	_, err = run(`{"channel": "b"}`)
	assert.NotErrorIs(t, err, flow.ErrPermanent, "another worker may have channel b")
	assert.EqualError(t, err, `notify: this worker lacks the settings of channel "b"`)
	_, err = run(`[1]`)
	assert.ErrorIs(t, err, flow.ErrPermanent)

	ch.err = errors.New("smtp 421 busy")
	_, err = run(string(inputs))
	assert.ErrorContains(t, err, "421 busy")
	assert.NotErrorIs(t, err, flow.ErrPermanent, "the channel's error decides")
}

// TestSecretsStayOutOfLogsAndErrors plants a webhook secret, a password
// and a token in the URL, lets deliveries fail every way a webhook can,
// and scans everything the system wrote: logs, errors, dead-letter
// reasons, snapshots and event logs.
func TestSecretsStayOutOfLogsAndErrors(t *testing.T) {
	for _, kind := range backendKinds {
		t.Run(kind, func(t *testing.T) {
			s := newSystem(t, kind)
			key := []byte("planted-webhook-secret-0123456789")
			secret := notify.SecretPrefix + base64.StdEncoding.EncodeToString(key)
			const password, token = "planted-password", "planted-token"
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			down := ln.Addr().String()
			require.NoError(t, ln.Close())
			rc := newReceiver(t, notify.NewSecret()) // another secret: it answers 401 to everything
			var channels []notify.Channel
			for name, target := range map[string]string{"down": "http://user:" + password + "@" + down + "/hook?token=" + token, "refuses": strings.Replace(rc.srv.URL, "http://", "http://user:"+password+"@", 1) + "/hook?token=" + token} {
				w, err := notify.NewWebhook(notify.WebhookConfig{Name: name, URL: target, Secret: secret, AllowPrivate: true, Logger: s.logger})
				require.NoError(t, err)
				channels = append(channels, w)
			}
			n := s.notifier(t, notify.Config{Channels: channels, MaxAttempts: 2})
			s.run(t, time.Millisecond)
			ids, err := n.Notify(context.Background(), *sampleNotification(""))
			require.NoError(t, err)
			require.Len(t, ids, 2)

			var written []string
			for _, id := range ids {
				info := s.waitEnded(t, id)
				assert.Equal(t, progress.StateFailure, info.Snapshot.State)
				snap, err := json.Marshal(info.Snapshot)
				require.NoError(t, err)
				written = append(written, string(snap), s.dead(t, id).Reason)
				events, err := s.store.Events(context.Background(), id, "")
				require.NoError(t, err)
				ev, err := json.Marshal(events)
				require.NoError(t, err)
				written = append(written, string(ev))
			}
			require.NotEmpty(t, rc.requests(), "the receiver was reached")
			for _, w := range channels {
				written = append(written, w.(*notify.Webhook).URL())
			}
			written = append(written, s.logs.String())
			for _, planted := range []string{string(key), strings.TrimPrefix(secret, notify.SecretPrefix), password, token} {
				for _, text := range written {
					assert.NotContains(t, text, planted)
				}
			}
			assert.Contains(t, s.logs.String(), "webhook delivery", "the logs were captured")
		})
	}
}
