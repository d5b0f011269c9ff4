package ssehttp_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// site is the queue and progress store of one test, on one backend, with
// handlers served over HTTP on top of them: two handlers of one site are
// two server processes sharing the backend. No worker runs: tasks stay
// PENDING.
type site struct {
	backend queue.Backend
	store   progress.Backend
	reg     *registry.Registry
	broker  *queue.Broker
	insp    *queue.Inspector
	// reopen returns backends on the same data as backend and store, as
	// another process would have: on Redis, another client.
	reopen func(t *testing.T) (queue.Backend, progress.Backend)
}

// backendKinds are the backends the HTTP tests that must hold on both run
// against: the in-memory one, and Redis on a redis-server of the test's
// own.
var backendKinds = []struct {
	name string
	// make returns new backends, and how to open them again.
	make func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend))
}{
	{"Memory", func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend)) {
		b, s := queue.NewMemory(queue.MemoryConfig{}), progress.NewMemoryStore(progress.MemoryConfig{})
		return b, s, func(*testing.T) (queue.Backend, progress.Backend) { return b, s }
	}},
	{"Redis", func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend)) {
		srv := redistest.Start(t)
		open := func(t *testing.T) (queue.Backend, progress.Backend) {
			b, err := redisbackend.New(srv.Client(t), redisbackend.Config{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, b.Close()) })
			return b, b
		}
		b, s := open(t)
		return b, s, open
	}},
}

// onEachBackend runs test once per backend kind, as a subtest.
func onEachBackend(t *testing.T, test func(t *testing.T, s *site)) {
	for _, kind := range backendKinds {
		t.Run(kind.name, func(t *testing.T) { test(t, newSite(t, kind.make)) })
	}
}

// newSite returns a site on the backends that open makes.
func newSite(t *testing.T, open func(t *testing.T) (queue.Backend, progress.Backend, func(t *testing.T) (queue.Backend, progress.Backend))) *site {
	backend, store, reopen := open(t)
	reg := registry.New()
	for _, name := range []string{"poem_flow", "other_flow"} {
		reg.MustRegister(name, noopFlow())
	}
	quiet := slog.New(slog.DiscardHandler)
	return &site{
		backend: backend, store: store, reg: reg,
		broker: queue.NewBroker(backend, store.(progress.Store), queue.BrokerConfig{Registry: reg, Logger: quiet}),
		insp:   queue.NewInspector(backend, store.(progress.Store), queue.InspectorConfig{Logger: quiet}),
		reopen: reopen,
	}
}

// process returns a Broker with bc (Registry and Logger filled in) on
// backends reopened as another process would, and the progress store it
// goes with.
func (s *site) process(t *testing.T, bc queue.BrokerConfig) (*queue.Broker, progress.Backend) {
	backend, store := s.reopen(t)
	bc.Registry, bc.Logger = s.reg, slog.New(slog.DiscardHandler)
	return queue.NewBroker(backend, store.(progress.Store), bc), store
}

// serve serves a new Handler of the site with cfg until the test ends,
// and returns its URL. Registry and Logger are filled in, and Queue and
// Progress when not set: the site's broker and store.
func (s *site) serve(t *testing.T, cfg ssehttp.Config) string {
	t.Helper()
	if cfg.Queue == nil {
		cfg.Queue, cfg.Progress = s.broker, s.store
	}
	cfg.Registry = s.reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := httptest.NewServer(ssehttp.New(cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// taskCount returns how many tasks the site's queue holds.
func (s *site) taskCount(t *testing.T) int {
	t.Helper()
	page, err := s.insp.List(context.Background(), queue.ListOptions{Limit: queue.MaxListLimit})
	require.NoError(t, err)
	return len(page.Tasks)
}

// startReq is one POST /start-task/: the body, and headers to set.
type startReq struct {
	body    string
	headers map[string]string
}

// postStart sends r to the start-task route of base and returns the
// status, the task id of a 200 (or the error message otherwise) and the
// answer's headers. It is safe to call from several goroutines: it
// reports failures with t.Error.
func postStart(t *testing.T, base string, r startReq) (status int, idOrError string, header http.Header) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/start-task/", strings.NewReader(r.body))
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	var out struct {
		TaskID string `json:"task_id"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, out.TaskID, resp.Header
	}
	return resp.StatusCode, out.Error, resp.Header
}

// noopFlow is a flow that takes any inputs and does nothing.
func noopFlow() flow.Flow {
	return flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil })
}
