package ssehttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// testTimeout bounds every wait of these tests so that a bug fails a test
// instead of hanging it.
const testTimeout = 20 * time.Second

// env is a complete system on the in-memory backends: store, queue,
// worker, handler and an HTTP server.
type env struct {
	store   *progress.MemoryStore
	broker  *queue.Broker
	handler *ssehttp.Handler
	server  *httptest.Server
	client  *http.Client
	// gate releases one step of gated_flow per value received.
	gate chan struct{}
	// started receives the id of every gated_flow run as it starts.
	started chan string
	// stop shuts the server and the worker down; it is idempotent and
	// also run by t.Cleanup.
	stop func()
}

// envOptions adjust newEnv.
type envOptions struct {
	// config is the handler's configuration; Queue, Progress and
	// Registry are filled in.
	config ssehttp.Config
	// stepDelay is the pause between poem_flow's steps; zero means 5ms.
	stepDelay time.Duration
	// concurrency is the worker's; zero means 8.
	concurrency int
	// mount wraps the handler before it is served (a prefix, say).
	mount func(http.Handler) http.Handler
	// register adds flows of the test's own to the registry.
	register func(*registry.Registry)
	// server, when set, adjusts the test server before it starts.
	server func(*httptest.Server)
	// noInspector leaves Config.Inspector nil, which newEnv otherwise
	// sets to an Inspector of the test's backends.
	noInspector bool
	// queue, when set, makes the handler's Queue from the broker.
	queue func(*queue.Broker) ssehttp.Queue
}

// testRegistry returns a registry with the flows these tests run:
//
//   - poem_flow: plain Go, no inputs; reports progress, logs, a tool result
//     and tokens with small pauses, and returns a poem;
//   - web_search_flow: typed, with a required "question" string;
//   - gated_flow: logs one step per value received on gate, five in all,
//     so that a test decides when the task moves on; it honours
//     cancellation.
func testRegistry(stepDelay time.Duration, gate <-chan struct{}, started chan<- string) *registry.Registry {
	reg := registry.New()
	pause := func(ctx context.Context) error {
		select {
		case <-time.After(stepDelay):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	reg.MustRegister("poem_flow", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Progress(10, "Choosing a subject")
		t.Progress.Log("Subject: the sea")
		if err := pause(ctx); err != nil {
			return nil, err
		}
		t.Progress.ToolResult("research", "thesaurus", map[string]any{"sea": []string{"ocean", "deep"}})
		t.Progress.Progress(50, "Writing")
		if err := pause(ctx); err != nil {
			return nil, err
		}
		lines := []string{"The ocean hums, ", "the deep replies."}
		for _, l := range lines {
			t.Progress.Token(l)
		}
		t.Progress.Log("Poem written")
		t.Progress.Progress(90, "Polishing")
		if err := pause(ctx); err != nil {
			return nil, err
		}
		return strings.Join(lines, ""), nil
	}), registry.Description("Writes a short poem"))

	type question struct {
		Question string `json:"question" desc:"what to search for"`
	}
	reg.MustRegister("web_search_flow", flow.Typed(func(ctx context.Context, in question, t *flow.Task) (string, error) {
		t.Progress.Log("Searching for " + in.Question)
		return "answer to " + in.Question, nil
	}), registry.Description("Answers a question"))

	reg.MustRegister("gated_flow", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		select {
		case started <- t.ID:
		default:
		}
		for i := 1; i <= 5; i++ {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			t.Progress.Log(fmt.Sprintf("step %d", i))
		}
		return "gated done", nil
	}))

	reg.MustRegister("internal_flow", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		return "only the host's code starts it", nil
	}), registry.Internal())
	return reg
}

// newEnv starts a complete system and stops it at the end of the test.
func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	if opts.stepDelay == 0 {
		opts.stepDelay = 5 * time.Millisecond
	}
	if opts.concurrency == 0 {
		opts.concurrency = 8
	}
	e := &env{
		store:   progress.NewMemoryStore(progress.MemoryConfig{}),
		gate:    make(chan struct{}),
		started: make(chan string, 16),
	}
	backend := queue.NewMemory(queue.MemoryConfig{})
	reg := testRegistry(opts.stepDelay, e.gate, e.started)
	e.broker = queue.NewBroker(backend, e.store, queue.BrokerConfig{Registry: reg})
	if opts.register != nil {
		opts.register(reg)
	}
	worker := queue.NewWorker(backend, e.store, queue.WorkerConfig{
		Registry:      reg,
		Concurrency:   opts.concurrency,
		ShutdownGrace: 200 * time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})

	cfg := opts.config
	cfg.Queue, cfg.Progress, cfg.Registry = e.broker, e.store, reg
	if cfg.Inspector == nil && !opts.noInspector {
		cfg.Inspector = queue.NewInspector(backend, e.store, queue.InspectorConfig{Logger: slog.New(slog.DiscardHandler)})
	}
	if opts.queue != nil {
		cfg.Queue = opts.queue(e.broker)
	}
	e.handler = ssehttp.New(cfg)
	var h http.Handler = e.handler
	if opts.mount != nil {
		h = opts.mount(h)
	}
	e.server = httptest.NewUnstartedServer(h)
	if opts.server != nil {
		opts.server(e.server)
	}
	e.server.Start()
	transport := &http.Transport{MaxIdleConnsPerHost: 8}
	e.client = &http.Client{Transport: transport}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()

	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			e.server.Close()
			transport.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("worker.Run: %v", err)
				}
			case <-time.After(testTimeout):
				t.Errorf("worker.Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

// post sends a same-origin-less POST, as curl would.
func (e *env) post(t *testing.T, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.server.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return e.do(t, req)
}

// get sends a GET and reads the whole answer.
func (e *env) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.server.URL+path, nil)
	require.NoError(t, err)
	return e.do(t, req)
}

func (e *env) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := e.client.Do(req.WithContext(ctx))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// start starts a task of the named flow through the API and returns its id.
func (e *env) start(t *testing.T, flowName string) string {
	t.Helper()
	resp, body := e.post(t, "/start-task/", fmt.Sprintf(`{"flow":%q,"inputs":{}}`, flowName))
	require.Equal(t, http.StatusOK, resp.StatusCode, "start-task: %s", body)
	var out struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal(body, &out))
	require.NotEmpty(t, out.TaskID)
	return out.TaskID
}

// waitTerminal polls the store until the task is in a terminal state and
// returns its snapshot.
func (e *env) waitTerminal(t *testing.T, id string) progress.Snapshot {
	t.Helper()
	var snap progress.Snapshot
	require.Eventually(t, func() bool {
		var err error
		snap, _, err = e.store.Snapshot(context.Background(), id)
		return err == nil && snap.State.Terminal()
	}, testTimeout, 2*time.Millisecond, "task %s never finished", id)
	return snap
}

// waitStarted waits until a worker has started gated_flow's task id and
// recorded its first event.
func (e *env) waitStarted(t *testing.T, id string) {
	t.Helper()
	select {
	case got := <-e.started:
		require.Equal(t, id, got)
	case <-time.After(testTimeout):
		t.Fatal("gated_flow did not start")
	}
	require.Eventually(t, func() bool {
		_, last, err := e.store.Snapshot(context.Background(), id)
		return err == nil && last != ""
	}, testTimeout, time.Millisecond)
}

// release lets gated_flow take n more steps.
func (e *env) release(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case e.gate <- struct{}{}:
		case <-time.After(testTimeout):
			t.Fatal("gated_flow is not waiting for its gate")
		}
	}
}

// watch is an open event stream.
type watch struct {
	resp   *http.Response
	sse    *sse.Reader
	cancel context.CancelFunc
}

// open opens the task's event stream, sending header as Last-Event-ID
// and query as the lastEventId parameter when they are not empty, and
// checks the stream's headers.
func (e *env) open(t *testing.T, id, header, query string) *watch {
	t.Helper()
	w, status := e.openStatus(t, id, header, query)
	require.Equal(t, http.StatusOK, status)
	return w
}

// openStatus is open without the status check; the watch is nil unless
// the status is 200.
func (e *env) openStatus(t *testing.T, id, header, query string) (*watch, int) {
	t.Helper()
	q := url.Values{}
	if query != "" {
		q.Set("lastEventId", query)
	}
	return e.openQuery(t, id, header, q)
}

// openQuery is openStatus with the query given whole.
func (e *env) openQuery(t *testing.T, id, header string, query url.Values) (*watch, int) {
	t.Helper()
	return openWatch(t, e.client, e.server.URL, id, header, query)
}

// openWatch opens the event stream of task id at base with client, as
// env.openQuery does.
func openWatch(t *testing.T, client *http.Client, base, id, header string, query url.Values) (*watch, int) {
	t.Helper()
	u := base + "/task-status/" + id + "/"
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	if header != "" {
		req.Header.Set("Last-Event-ID", header)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	w := &watch{resp: resp, sse: sse.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(w.close)
	return w, resp.StatusCode
}

// close disconnects, as a browser closing its tab.
func (w *watch) close() {
	w.cancel()
	w.resp.Body.Close()
}

// message is one SSE message with an id: a snapshot or a token.
type message struct {
	ID    string
	Event string
	Data  string
}

// nextMessage returns the next frame that carries data, skipping the
// retry hint and heartbeats. ok is false at the end of the stream.
func (w *watch) nextMessage(t *testing.T) (message, bool) {
	t.Helper()
	for {
		f, err := w.sse.Next()
		if errors.Is(err, io.EOF) {
			return message{}, false
		}
		require.NoError(t, err)
		if !f.HasData {
			continue
		}
		require.True(t, f.HasID, "message without id: %+v", f)
		return message{ID: f.ID, Event: f.Event, Data: f.Data}, true
	}
}

// rest reads messages until the stream ends.
func (w *watch) rest(t *testing.T) []message {
	t.Helper()
	var out []message
	for {
		m, ok := w.nextMessage(t)
		if !ok {
			return out
		}
		out = append(out, m)
	}
}

// snapshotOf decodes a default message's data.
func snapshotOf(t *testing.T, m message) progress.Snapshot {
	t.Helper()
	require.Empty(t, m.Event, "not a default message: %+v", m)
	var s progress.Snapshot
	dec := json.NewDecoder(bytes.NewReader([]byte(m.Data)))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&s), "data: %s", m.Data)
	return s
}

// errorOf decodes an error body.
func errorOf(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "body: %s", body)
	var out map[string]any
	require.NoError(t, json.Unmarshal(body, &out), "body: %s", body)
	require.Len(t, out, 1, "body: %s", body)
	msg, ok := out["error"].(string)
	require.True(t, ok, "body: %s", body)
	require.NotEmpty(t, msg)
	return msg
}
