package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/examples/telemetry"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/pghistory"
	"github.com/flowsrun/flows/pghistory/pgtest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// testSecret is a webhook secret for configuration tests.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestParseConfig(t *testing.T) {
	const url = "redis://127.0.0.1:6390/0"
	defaults := config{RedisURL: url, Queue: "default", Prefix: "flows", Concurrency: queue.DefaultConcurrency,
		Lease: queue.DefaultLease, Grace: queue.DefaultShutdownGrace, Telemetry: telemetry.Options{Service: "flows-worker"}}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(c *config)
		wantErr string
	}{
		{name: "defaults", want: func(*config) {}},
		{name: "flags", args: []string{"-concurrency", "16", "-queue", "emails", "-prefix", "app", "-lease", "5s", "-grace", "1m"},
			want: func(c *config) {
				c.Concurrency, c.Queue, c.Prefix, c.Lease, c.Grace = 16, "emails", "app", 5*time.Second, time.Minute
			}},
		{name: "queue and prefix from the environment", env: map[string]string{"FLOWS_QUEUE": "emails", "FLOWS_PREFIX": "app"},
			want: func(c *config) { c.Queue, c.Prefix = "emails", "app" }},
		{name: "flags win over the environment", args: []string{"-queue", "q2"}, env: map[string]string{"FLOWS_QUEUE": "q1"},
			want: func(c *config) { c.Queue = "q2" }},
		{name: "durable mode", args: []string{"-wait-replicas", "1"}, want: func(c *config) { c.WaitReplicas = 1 }},
		{name: "durable mode from the environment", env: map[string]string{"FLOWS_WAIT_REPLICAS": "2"}, want: func(c *config) { c.WaitReplicas = 2 }},
		{name: "negative durable mode", args: []string{"-wait-replicas", "-1"}, wantErr: "-wait-replicas"},
		{name: "fetch delay", args: []string{"-fetch-delay", "50ms"}, want: func(c *config) { c.FetchDelay = 50 * time.Millisecond }},
		{name: "fetch delay from the environment", env: map[string]string{"FLOWS_FETCH_DELAY": "100ms"}, want: func(c *config) { c.FetchDelay = 100 * time.Millisecond }},
		{name: "negative fetch delay", args: []string{"-fetch-delay", "-1ms"}, wantErr: "-fetch-delay"},
		{name: "ack delay", args: []string{"-ack-delay", "10ms"}, want: func(c *config) { c.AckDelay = 10 * time.Millisecond }},
		{name: "ack delay from the environment", env: map[string]string{"FLOWS_ACK_DELAY": "5ms"}, want: func(c *config) { c.AckDelay = 5 * time.Millisecond }},
		{name: "negative ack delay", args: []string{"-ack-delay", "-1ms"}, wantErr: "-ack-delay"},
		{name: "bad fetch delay", env: map[string]string{"FLOWS_FETCH_DELAY": "soon"}, wantErr: "-fetch-delay"},
		{name: "history, metrics and tracing", args: []string{"-metrics-addr", ":9090"},
			env: map[string]string{"DATABASE_URL": "postgres://u@db/flows", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want: func(c *config) {
				c.DatabaseURL, c.MetricsAddr, c.Telemetry.Tracing = "postgres://u@db/flows", ":9090", true
			}},
		{name: "no REDIS_URL", env: map[string]string{"REDIS_URL": ""}, wantErr: "REDIS_URL is not set"},
		{name: "bad REDIS_URL", env: map[string]string{"REDIS_URL": "http://example.com"}, wantErr: "REDIS_URL"},
		{name: "no concurrency", args: []string{"-concurrency", "0"}, wantErr: "-concurrency"},
		{name: "no lease", args: []string{"-lease", "0s"}, wantErr: "-lease"},
		{name: "no grace", args: []string{"-grace", "-1s"}, wantErr: "-grace"},
		{name: "braces in the queue", args: []string{"-queue", "a{b}"}, wantErr: "-queue"},
		{name: "empty prefix", args: []string{"-prefix", ""}, wantErr: "-prefix"},
		{name: "unknown flag", args: []string{"-workers", "2"}, wantErr: "workers"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected"},
		{name: "notifications", env: map[string]string{"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": testSecret, "WEBHOOK_ALLOW_PRIVATE": "1"},
			want: func(c *config) {
				c.Notify = notifications.Config{WebhookURL: "http://127.0.0.1:9000/hook", Secret: testSecret, AllowPrivate: true}
			}},
		{name: "webhook to a private address", env: map[string]string{"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": testSecret}, wantErr: "WEBHOOK_ALLOW_PRIVATE=1"},
		{name: "webhook without a secret", env: map[string]string{"WEBHOOK_URL": "http://127.0.0.1:9000/hook"}, wantErr: "WEBHOOK_SECRET"},
		{name: "bad SMTP_URL", env: map[string]string{"SMTP_URL": "smtp://u:planted@mail.test:0", "NOTIFY_EMAIL_TO": "a@example.com", "NOTIFY_EMAIL_FROM": "f@example.com"}, wantErr: "bad port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"REDIS_URL": url}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg, err := parseConfig(tt.args, func(k string) string { return env[k] }, io.Discard)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.NotContains(t, err.Error(), "planted")
				return
			}
			require.NoError(t, err)
			require.NotNil(t, cfg.Telemetry.Getenv, "the exporter reads the environment the config does")
			assert.Equal(t, env["OTEL_EXPORTER_OTLP_ENDPOINT"], cfg.Telemetry.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
			cfg.Telemetry.Getenv = nil
			want := defaults
			tt.want(&want)
			assert.Equal(t, want, cfg)
		})
	}
}

// closedPortURL is a redis:// URL on which nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
}

func TestCommandExitStatus(t *testing.T) {
	unreachable := closedPortURL(t)
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		status   int
		contains string
	}{
		{name: "help", args: []string{"-h"}, status: 0, contains: "-concurrency"},
		{name: "no REDIS_URL", status: 2, contains: "REDIS_URL is not set"},
		{name: "bad flag", args: []string{"-concurrency", "many"}, env: map[string]string{"REDIS_URL": unreachable}, status: 2, contains: "-concurrency"},
		{name: "Redis unreachable", env: map[string]string{"REDIS_URL": unreachable}, status: 1, contains: "connect to Redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			status := command(tt.args, func(k string) string { return tt.env[k] }, &stderr, registerTestFlows)
			assert.Equal(t, tt.status, status, "stderr:\n%s", stderr.String())
			assert.Contains(t, stderr.String(), tt.contains)
		})
	}
}

// TestCommandKeepsCredentialsOut gives the worker a REDIS_URL with a
// password and a secret parameter that does not parse, then one of a
// Redis that is down: what it writes says what is wrong, without them.
func TestCommandKeepsCredentialsOut(t *testing.T) {
	const pass, token = "PLANTED-pass", "PLANTED-token"
	port := strings.TrimPrefix(closedPortURL(t), "redis://127.0.0.1:")
	for _, tt := range []struct {
		name, url string
		status    int
		contains  string
	}{
		{"does not parse", "redis://user:" + pass + " x@127.0.0.1:nope/0?token=" + token, 2, "REDIS_URL"},
		{"Redis down", "redis://user:" + pass + "@127.0.0.1:" + port + "?token=" + token, 1, "connect to Redis"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			status := command(nil, func(k string) string {
				if k == "REDIS_URL" {
					return tt.url
				}
				return ""
			}, &stderr, registerTestFlows)
			assert.Equal(t, tt.status, status, "stderr:\n%s", stderr.String())
			assert.Contains(t, stderr.String(), tt.contains)
			assert.NotContains(t, stderr.String(), pass)
			assert.NotContains(t, stderr.String(), token)
		})
	}
}

// TestRunRunsTheExampleFlows runs the worker in this process against a
// real Redis: a poem_flow task enqueued by a web process's broker ends
// SUCCESS, and the worker stops when its context ends.
func TestRunRunsTheExampleFlows(t *testing.T) {
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	reg := registry.New()
	require.NoError(t, exampleflows.RegisterWith(reg, offlineFlows(exampleflows.Config{StepDelay: time.Millisecond, TokenDelay: -1})))
	cfg := config{RedisURL: srv.URL(), Queue: q.name, Prefix: q.prefix, Concurrency: 2, Lease: 5 * time.Second, Grace: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}

	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		runErr = run(ctx, cfg, reg)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})

	id, err := q.broker.Enqueue(context.Background(), exampleflows.PoemFlowName, nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	events, err := q.b.Subscribe(ctx, id, "")
	require.NoError(t, err)
	var last progress.Event
	for e := range events {
		last = e
	}
	require.True(t, last.Terminal(), "the event stream ended before the task: %+v", last)
	assert.Equal(t, progress.StateSuccess, last.State, "status: %s", last.Status)

	cancel()
	select {
	case <-stopped:
		assert.NoError(t, runErr)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

// TestRunWritesHistoryAndServesMetrics: with DATABASE_URL and
// -metrics-addr, the worker writes each task it ends to the run history
// and serves its metrics.
func TestRunWritesHistoryAndServesMetrics(t *testing.T) {
	srv := redistest.Start(t)
	q := newTestQueue(t, srv)
	dbURL := pgtest.Start(t).Database(t)
	reg := registry.New()
	require.NoError(t, exampleflows.RegisterWith(reg, offlineFlows(exampleflows.Config{StepDelay: time.Millisecond, TokenDelay: -1})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cfg := config{RedisURL: srv.URL(), Queue: q.name, Prefix: q.prefix, Concurrency: 2, Lease: 5 * time.Second, Grace: 5 * time.Second,
		DatabaseURL: dbURL, MetricsAddr: metricsAddr, Logger: slog.New(slog.DiscardHandler)}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, cfg, reg) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-stopped)
	})

	id, err := q.broker.Enqueue(context.Background(), exampleflows.PoemFlowName, nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	history, err := pghistory.Open(context.Background(), dbURL, pghistory.Config{})
	require.NoError(t, err)
	defer history.Close()
	var rec pghistory.Record
	require.Eventually(t, func() bool {
		rec, err = history.Get(context.Background(), id)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "no history row: %v", err)
	assert.Equal(t, progress.StateSuccess, rec.State)
	assert.Equal(t, exampleflows.PoemFlowName, rec.Flow)

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `flows_tasks_ended_total{flows_flow="poem_flow",flows_task_state="SUCCESS"`)
}
