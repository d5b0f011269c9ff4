package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exampleflows "github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/examples/llm"
	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/examples/telemetry"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
)

// testConfig is a server configuration with fast flows and quiet logs.
// The flows see an empty environment: the offline model and search,
// whatever keys the machine running the tests has.
func testConfig() config {
	return config{
		Workers:         4,
		Flows:           exampleflows.Config{Getenv: func(string) string { return "" }, StepDelay: 10 * time.Millisecond, TokenDelay: time.Millisecond},
		ShutdownTimeout: 5 * time.Second,
		Grace:           5 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// startServer serves newServer(cfg) on an httptest server with its workers
// running; both stop when the test ends.
func startServer(t *testing.T, cfg config) *httptest.Server {
	t.Helper()
	handler, run, err := newServer(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		assert.NoError(t, <-done)
	})
	return srv
}

// readSSE reads the messages of an event stream until it ends, calling
// each for every message with data (comments and retry hints are skipped).
func readSSE(t *testing.T, body io.Reader, each func(sse.Message)) {
	t.Helper()
	r := sse.NewReader(body)
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		if m.HasData {
			each(m)
		}
	}
}

func startTask(t *testing.T, client *http.Client, baseURL, body string) string {
	t.Helper()
	resp, err := client.Post(baseURL+"/start-task/", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotEmpty(t, out.TaskID)
	return out.TaskID
}

func TestServerSaysTheAPIIsOpen(t *testing.T) {
	var logs syncbuf.Buffer
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	startServer(t, cfg)
	assert.Contains(t, logs.String(), `level=WARN msg="the flows API is open: any caller may start, read, watch and cancel any task`)
}

func TestServerServesThePage(t *testing.T) {
	srv := startServer(t, testConfig())
	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html", `<script src="app.js" defer></script>`},
		{"/app.js", "javascript", "new EventSource("},
		{"/style.css", "text/css", ".task-card"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Contains(t, resp.Header.Get("Content-Type"), tt.contentType)
			assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Contains(t, string(body), tt.contains)
		})
	}
	t.Run("only the root is the page", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/no-such-page")
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("Content-Type"), "application/json", "unknown paths belong to the API")
	})
}

func TestServerListsTheExampleFlows(t *testing.T) {
	srv := startServer(t, testConfig())
	resp, err := http.Get(srv.URL + "/flows/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list []struct {
		Name        string            `json:"name"`
		Description string            `json:"description"`
		InputSchema json.RawMessage   `json:"input_schema"`
		Labels      map[string]string `json:"labels"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	var names []string
	for _, f := range list {
		names = append(names, f.Name)
		assert.Equal(t, llm.OfflineLabel, f.Labels[exampleflows.LabelModel], "%s: the offline model is labelled as such", f.Name)
		if f.Name != exampleflows.PoemFlowName {
			assert.Equal(t, exampleflows.OfflineSearchLabel, f.Labels[exampleflows.LabelSearch], f.Name)
		}
		assert.NotEmpty(t, f.InputSchema, f.Name)
	}
	assert.ElementsMatch(t, []string{exampleflows.PoemFlowName, exampleflows.WebSearchFlowName, exampleflows.ResearchAgentName}, names)
}

func TestServerLabelsFlowsWithTheModelOfTheEnvironment(t *testing.T) {
	cfg := testConfig()
	// The Gemini provider is built from the key but called only when a
	// flow runs: listing the flows makes no request.
	cfg.Flows.Getenv = func(k string) string {
		return map[string]string{"GEMINI_API_KEY": "test-key", "TAVILY_API_KEY": "tvly-test"}[k]
	}
	srv := startServer(t, cfg)
	resp, err := http.Get(srv.URL + "/flows/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list []struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.NotEmpty(t, list)
	for _, f := range list {
		assert.Equal(t, "Gemini "+llm.DefaultGeminiModel+" (Google AI)", f.Labels[exampleflows.LabelModel], f.Name)
		if f.Name != exampleflows.PoemFlowName {
			assert.Equal(t, exampleflows.TavilySearchLabel, f.Labels[exampleflows.LabelSearch], f.Name)
		}
	}
}

func TestServerRunsPoemFlowToSuccessOverSSE(t *testing.T) {
	assertPoemOverSSE(t, startServer(t, testConfig()))
}

// assertPoemOverSSE starts poem_flow on srv and follows its event stream
// to SUCCESS, checking the snapshots and tokens on the way. It returns the
// task's id.
func assertPoemOverSSE(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	id := startTask(t, srv.Client(), srv.URL, `{"flow": "poem_flow", "inputs": {}}`)

	resp, err := http.Get(srv.URL + "/task-status/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/event-stream")

	var snaps []progress.Snapshot
	var tokens strings.Builder
	readSSE(t, resp.Body, func(m sse.Message) {
		switch m.Event {
		case "":
			var s progress.Snapshot
			require.NoError(t, json.Unmarshal([]byte(m.Data), &s), m.Data)
			snaps = append(snaps, s)
		case "token":
			var tok struct {
				Token string `json:"token"`
			}
			require.NoError(t, json.Unmarshal([]byte(m.Data), &tok), m.Data)
			tokens.WriteString(tok.Token)
		}
	})

	require.NotEmpty(t, snaps, "the stream ended without a snapshot")
	assert.Contains(t, []progress.State{progress.StatePending, progress.StateProgress}, snaps[0].State)
	for i := 1; i < len(snaps); i++ {
		assert.GreaterOrEqual(t, len(snaps[i].Details.StepResults), len(snaps[i-1].Details.StepResults), "step_results shrank")
	}
	last := snaps[len(snaps)-1]
	require.Equal(t, progress.StateSuccess, last.State, "status: %s", last.Details.Status)
	assert.Equal(t, 100, last.Details.Progress)
	var poem string
	require.NoError(t, json.Unmarshal(last.Details.FinalResult, &poem))
	assert.NotEmpty(t, poem)
	assert.Equal(t, poem, tokens.String(), "the streamed tokens add up to the poem")
	assert.Greater(t, len(last.Details.StepResults), 2)
	return id
}

func TestServerRefusesBadInputs(t *testing.T) {
	srv := startServer(t, testConfig())
	resp, err := http.Post(srv.URL+"/start-task/", "application/json", strings.NewReader(`{"flow": "web_search_flow", "inputs": {"question": " "}}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	var body struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Contains(t, body.Error, "question")
}

func TestServeShutsDownGracefully(t *testing.T) {
	cfg := testConfig()
	cfg.Flows.StepDelay = time.Hour // the task is still running at shutdown
	cfg.Grace = 50 * time.Millisecond
	before := runtime.NumGoroutine()
	client := &http.Client{Transport: &http.Transport{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, ln) }()

	base := "http://" + ln.Addr().String()
	id := startTask(t, client, base, `{"flow": "poem_flow"}`)
	resp, err := client.Get(base + "/task-status/" + id + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	streamEnded := make(chan struct{})
	go func() {
		defer close(streamEnded)
		_, _ = io.Copy(io.Discard, resp.Body)
	}()

	cancel()
	select {
	case err := <-served:
		assert.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	select {
	case <-streamEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the open event stream was not closed by the shutdown")
	}
	_, err = client.Get(base + "/flows/")
	assert.Error(t, err, "the server still answers after shutdown")

	client.CloseIdleConnections()
	// Polled here rather than with assert.Eventually, whose own goroutine
	// would be counted.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines left after shutdown, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestParseConfig(t *testing.T) {
	const redisURL = "redis://127.0.0.1:6390/0"
	tests := []struct {
		name          string
		args          []string
		env           map[string]string
		addr          string
		workers       int
		queue, prefix string
		origins       []string
		waitReplicas  int
		enqueueDelay  time.Duration
		ackDelay      time.Duration
		db            string
		tel           telemetry.Options // zero: the defaults
		wantErr       string
	}{
		{name: "defaults", addr: ":8080", workers: 8},
		{name: "PORT", env: map[string]string{"PORT": "9000"}, addr: ":9000", workers: 8},
		{name: "ADDR wins over PORT", env: map[string]string{"PORT": "9000", "ADDR": "127.0.0.1:9001"}, addr: "127.0.0.1:9001", workers: 8},
		{name: "flag wins over env", args: []string{"-addr", ":7000", "-workers", "2"}, env: map[string]string{"ADDR": ":9001"}, addr: ":7000", workers: 2},
		{name: "queue and prefix from the environment", env: map[string]string{"FLOWS_QUEUE": "emails", "FLOWS_PREFIX": "app"},
			addr: ":8080", workers: 8, queue: "emails", prefix: "app"},
		{name: "queue and prefix flags", args: []string{"-queue", "q2", "-prefix", "p2"}, env: map[string]string{"FLOWS_QUEUE": "emails"},
			addr: ":8080", workers: 8, queue: "q2", prefix: "p2"},
		{name: "no workers on Redis", args: []string{"-workers", "0"}, env: map[string]string{"REDIS_URL": redisURL}, addr: ":8080", workers: 0},
		{name: "no workers in memory", args: []string{"-workers", "0"}, wantErr: "needs REDIS_URL"},
		{name: "negative workers", args: []string{"-workers", "-1"}, env: map[string]string{"REDIS_URL": redisURL}, wantErr: "-workers"},
		{name: "bad REDIS_URL", env: map[string]string{"REDIS_URL": "http://example.com"}, wantErr: "REDIS_URL"},
		{name: "braces in the queue", args: []string{"-queue", "a{b}"}, wantErr: "-queue"},
		{name: "empty prefix", args: []string{"-prefix", ""}, wantErr: "-prefix"},
		{name: "negative grace", args: []string{"-grace", "-1s"}, wantErr: "-grace must be positive, got -1s"},
		{name: "zero grace", args: []string{"-grace", "0"}, wantErr: "-grace must be positive, got 0s"},
		{name: "negative body timeout", args: []string{"-body-timeout", "-1s"}, wantErr: "-body-timeout must be positive, got -1s"},
		{name: "ops page refresh too fast", args: []string{"-ops-refresh", "10ms"}, wantErr: "-ops-refresh 10ms: must be at least 100ms"},
		{name: "CORS origins from the environment", env: map[string]string{"FLOWS_CORS_ORIGINS": "https://app.example, http://localhost:5173,"},
			addr: ":8080", workers: 8, origins: []string{"https://app.example", "http://localhost:5173"}},
		{name: "CORS origins flag", args: []string{"-cors-origins", "https://b.example"}, env: map[string]string{"FLOWS_CORS_ORIGINS": "https://app.example"},
			addr: ":8080", workers: 8, origins: []string{"https://b.example"}},
		{name: "CORS origin with a path", args: []string{"-cors-origins", "https://app.example/"}, wantErr: "-cors-origins"},
		{name: "CORS wildcard", env: map[string]string{"FLOWS_CORS_ORIGINS": "*"}, wantErr: `"*" is not allowed`},
		{name: "durable mode from the environment", env: map[string]string{"REDIS_URL": redisURL, "FLOWS_WAIT_REPLICAS": "1"},
			addr: ":8080", workers: 8, waitReplicas: 1},
		{name: "durable mode flag", args: []string{"-wait-replicas", "2"}, env: map[string]string{"REDIS_URL": redisURL, "FLOWS_WAIT_REPLICAS": "1"},
			addr: ":8080", workers: 8, waitReplicas: 2},
		{name: "durable mode in memory", args: []string{"-wait-replicas", "1"}, wantErr: "-wait-replicas needs REDIS_URL"},
		{name: "delays from the environment", env: map[string]string{"REDIS_URL": redisURL, "FLOWS_ENQUEUE_DELAY": "100ms", "FLOWS_ACK_DELAY": "10ms"},
			addr: ":8080", workers: 8, enqueueDelay: 100 * time.Millisecond, ackDelay: 10 * time.Millisecond},
		{name: "delay flags", args: []string{"-enqueue-delay", "50ms", "-ack-delay", "5ms"}, env: map[string]string{"REDIS_URL": redisURL, "FLOWS_ENQUEUE_DELAY": "100ms"},
			addr: ":8080", workers: 8, enqueueDelay: 50 * time.Millisecond, ackDelay: 5 * time.Millisecond},
		{name: "negative enqueue delay", args: []string{"-enqueue-delay", "-1ms"}, env: map[string]string{"REDIS_URL": redisURL}, wantErr: "-enqueue-delay"},
		{name: "bad ack delay", args: []string{"-ack-delay", "soon"}, env: map[string]string{"REDIS_URL": redisURL}, wantErr: "-ack-delay"},
		{name: "delays in memory", args: []string{"-enqueue-delay", "100ms"}, wantErr: "need REDIS_URL"},
		{name: "bad durable mode", env: map[string]string{"REDIS_URL": redisURL, "FLOWS_WAIT_REPLICAS": "all"}, wantErr: "-wait-replicas"},
		{name: "history and tracing from the environment",
			env:  map[string]string{"DATABASE_URL": "postgres://u@db/flows", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "web"},
			addr: ":8080", workers: 8, db: "postgres://u@db/flows", tel: telemetry.Options{Service: "web", Tracing: true}},
		{name: "traces endpoint alone", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
			addr: ":8080", workers: 8, tel: telemetry.Options{Service: "flows-server", Tracing: true}},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "nope"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.addr, cfg.Addr)
			assert.Equal(t, tt.workers, cfg.Workers)
			assert.Equal(t, tt.env["REDIS_URL"], cfg.RedisURL)
			assert.Equal(t, cmp.Or(tt.queue, "default"), cfg.Queue)
			assert.Equal(t, cmp.Or(tt.prefix, "flows"), cfg.Prefix)
			assert.Equal(t, exampleflows.DefaultStepDelay, cfg.Flows.StepDelay)
			assert.Equal(t, tt.origins, cfg.CORSOrigins)
			assert.Equal(t, tt.waitReplicas, cfg.WaitReplicas)
			assert.Equal(t, tt.enqueueDelay, cfg.EnqueueDelay)
			assert.Equal(t, tt.ackDelay, cfg.AckDelay)
			assert.Equal(t, tt.db, cfg.DatabaseURL)
			wantTel := tt.tel
			if wantTel.Service == "" {
				wantTel = telemetry.Options{Service: "flows-server"}
			}
			require.NotNil(t, cfg.Telemetry.Getenv, "the exporter reads the environment the config does")
			assert.Equal(t, tt.env["OTEL_EXPORTER_OTLP_ENDPOINT"], cfg.Telemetry.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
			gotTel := cfg.Telemetry
			gotTel.Getenv = nil
			assert.Equal(t, wantTel, gotTel)
			assert.False(t, cfg.Healthcheck)
		})
	}
}

func TestPageURL(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"0.0.0.0:8080", "http://localhost:8080/"},
		{"[::]:8080", "http://localhost:8080/"},
		{"127.0.0.1:18080", "http://127.0.0.1:18080/"},
		{"[::1]:9000", "http://[::1]:9000/"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tt.addr)
			require.NoError(t, err)
			assert.Equal(t, tt.want, pageURL(addr))
		})
	}
}

// TestParseConfigNotifications: the notification variables are read and
// checked at start-up; a bad value is an error that quotes no secret.
func TestParseConfigNotifications(t *testing.T) {
	secret := notify.NewSecret()
	env := map[string]string{"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": secret, "WEBHOOK_ALLOW_PRIVATE": "1"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, notifications.Config{WebhookURL: "http://127.0.0.1:9000/hook", Secret: secret, AllowPrivate: true}, cfg.Notify)

	for name, bad := range map[string]map[string]string{
		"private target":   {"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": secret},
		"bad secret":       {"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": "whsec_cGxhbnRlZA==", "WEBHOOK_ALLOW_PRIVATE": "1"},
		"e-mail half done": {"SMTP_URL": "smtp://u:planted@127.0.0.1:2525"},
		"bad SMTP_URL":     {"SMTP_URL": "smtps://u:planted@127.0.0.1:2525?starttls=required", "NOTIFY_EMAIL_TO": "a@example.com", "NOTIFY_EMAIL_FROM": "f@example.com"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig(nil, func(k string) string { return bad[k] }, io.Discard)
			require.Error(t, err)
			assert.NotContains(t, err.Error(), "planted")
			assert.NotContains(t, err.Error(), "cGxhbnRlZA")
		})
	}
}
