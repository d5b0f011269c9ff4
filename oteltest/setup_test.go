package oteltest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tmc/langchaingo/chains"
	"github.com/tmc/langchaingo/llms"
	"github.com/tmc/langchaingo/prompts"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/flow/lcflow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
	"github.com/flowsrun/flows/ssehttp"
)

// The test flows: flaky fails its first attempt and succeeds on the
// second; chain is a langchaingo flow with a tool step and a model step;
// toolPanics and modelPanics are chain with a tool or a model that
// panics; toolLeaks has a tool whose error quotes a URL with a secret
// (apiSecret) in its query, as the errors of HTTP clients do; namedModel
// calls a model named namedModelName in its call options, which answers
// with its token counts; describedModel calls that model described by
// describedInfo (lcflow.DescribedModel), with no model in its call
// options, and describedNamed the same named in its call options.
const (
	flaky          = "flaky"
	chain          = "chain"
	namedModel     = "named_model"
	describedModel = "described_model"
	describedNamed = "described_named"
	toolPanics     = "tool_panics"
	modelPanics    = "model_panics"
	toolLeaks      = "tool_leaks"
	apiSecret      = "s3cr3tAPIkey"

	namedModelName = "echo-1"
)

// describedInfo is what describedModel tells of its model.
var describedInfo = lcflow.ModelInfo{Provider: "openai", Model: "echo-2"}

var errFirstTry = errors.New("the first try fails")

// newRegistry returns a registry with the test flows.
func newRegistry() *registry.Registry {
	reg := registry.New()
	reg.MustRegister(flaky, flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		if t.Attempt == 1 {
			return nil, errFirstTry
		}
		return "ok", nil
	}))
	search := lcflow.Step("Searching", lcflow.ToolChain(searchTool{}, "topic", "results"))
	summarise := lcflow.Step("Summarising", chains.NewLLMChain(lcflow.Model(echoModel{}),
		prompts.NewPromptTemplate("Summarise:\n{{.results}}", []string{"results"})))
	reg.MustRegister(chain, lcflow.Chain(lcflow.Sequence(search, summarise)))
	reg.MustRegister(toolPanics, lcflow.Chain(lcflow.Sequence(
		lcflow.Step("Searching", lcflow.ToolChain(panicTool{}, "topic", "results")), summarise)))
	reg.MustRegister(modelPanics, lcflow.Chain(lcflow.Sequence(search,
		lcflow.Step("Summarising", chains.NewLLMChain(lcflow.Model(panicModel{}),
			prompts.NewPromptTemplate("Summarise:\n{{.results}}", []string{"results"}))))))
	reg.MustRegister(toolLeaks, lcflow.Chain(lcflow.Step("Searching", lcflow.ToolChain(leakyTool{}, "topic", "results"))))
	named := lcflow.Chain(lcflow.Step("Answering", chains.NewLLMChain(lcflow.Model(usageModel{}),
		prompts.NewPromptTemplate("Answer:\n{{.topic}}", []string{"topic"}))))
	named.CallOptions = []chains.ChainCallOption{chains.WithModel(namedModelName)}
	reg.MustRegister(namedModel, named)
	described := func() *lcflow.Flow {
		return lcflow.Chain(lcflow.Step("Answering", chains.NewLLMChain(lcflow.DescribedModel(usageModel{}, describedInfo),
			prompts.NewPromptTemplate("Answer:\n{{.topic}}", []string{"topic"}))))
	}
	reg.MustRegister(describedModel, described())
	describedAndNamed := described()
	describedAndNamed.CallOptions = []chains.ChainCallOption{chains.WithModel(namedModelName)}
	reg.MustRegister(describedNamed, describedAndNamed)
	return reg
}

// usageModel is echoModel answering with its token counts, as
// langchaingo's openai provider reports them: the same counts in each
// choice's GenerationInfo.
type usageModel struct{ echoModel }

func (m usageModel) GenerateContent(ctx context.Context, msgs []llms.MessageContent, opts ...llms.CallOption) (*llms.ContentResponse, error) {
	resp, err := m.echoModel.GenerateContent(ctx, msgs, opts...)
	if err != nil {
		return nil, err
	}
	resp.Choices[0].GenerationInfo = map[string]any{"PromptTokens": 12, "CompletionTokens": 5, "TotalTokens": 17}
	return resp, nil
}

// leakyTool is a search tool whose error quotes a URL with apiSecret.
type leakyTool struct{ searchTool }

func (leakyTool) Call(context.Context, string) (string, error) {
	return "", errors.New(`Get "https://search.example.com/v1?q=otters&api_key=` + apiSecret + `": connection refused`)
}

// panicTool is a search tool that panics.
type panicTool struct{ searchTool }

func (panicTool) Call(context.Context, string) (string, error) { panic("the tool broke") }

// panicModel is a model that panics.
type panicModel struct{ echoModel }

func (panicModel) GenerateContent(context.Context, []llms.MessageContent, ...llms.CallOption) (*llms.ContentResponse, error) {
	panic("the model broke")
}

// searchTool is a langchaingo tool that answers every query.
type searchTool struct{}

func (searchTool) Name() string        { return "search" }
func (searchTool) Description() string { return "finds things" }
func (searchTool) Call(_ context.Context, input string) (string, error) {
	return `{"results": ["about ` + input + `"]}`, nil
}

// echoModel answers the last line of its prompt.
type echoModel struct{}

func (echoModel) GenerateContent(_ context.Context, msgs []llms.MessageContent, _ ...llms.CallOption) (*llms.ContentResponse, error) {
	var text string
	for _, m := range msgs {
		for _, p := range m.Parts {
			if t, ok := p.(llms.TextContent); ok {
				text = t.Text
			}
		}
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: "echo: " + lines[len(lines)-1]}}}, nil
}

func (m echoModel) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, m, prompt, options...)
}

// newTracer returns an SDK tracer provider that records every span.
func newTracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	tp, rec := newChildTracer()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}

// newChildTracer is newTracer outside a test.
func newChildTracer() (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)), rec
}

// stack is a broker, a running worker and the HTTP handler on one backend.
type stack struct {
	broker  *queue.Broker
	store   progress.Backend
	backend queue.Backend
	server  *httptest.Server
}

// providers are the tracer and meter providers a stack is made with; nil
// ones are the global.
type providers struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// backends makes the two backends the tests run on: in memory, and on a
// Redis of the test's own.
var backends = []struct {
	name string
	make func(t *testing.T) (queue.Backend, progress.Backend, progress.Store)
}{
	{"memory", func(t *testing.T) (queue.Backend, progress.Backend, progress.Store) {
		store := progress.NewMemoryStore(progress.MemoryConfig{})
		return queue.NewMemory(queue.MemoryConfig{}), store, store
	}},
	{"redis", func(t *testing.T) (queue.Backend, progress.Backend, progress.Store) {
		b := newRedisBackend(t, redistest.Start(t))
		return b, b, nil
	}},
}

func newRedisBackend(t *testing.T, srv *redistest.Server) *redisbackend.Backend {
	t.Helper()
	b, err := redisbackend.New(srv.Client(t), redisbackend.Config{})
	require.NoError(t, err)
	return b
}

// newStack starts a worker (unless noWorker) and an HTTP server on the
// backend made by mk, with p's providers.
func newStack(t *testing.T, qb queue.Backend, pb progress.Backend, store progress.Store, p providers, noWorker bool) *stack {
	t.Helper()
	reg := newRegistry()
	broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, TracerProvider: p.tp, MeterProvider: p.mp})
	if !noWorker {
		w := queue.NewWorker(qb, store, queue.WorkerConfig{
			Registry: reg, Concurrency: 4, TracerProvider: p.tp, MeterProvider: p.mp,
			Backoff: func(int) time.Duration { return 0 },
		})
		runWorker(t, w)
	}
	h := ssehttp.New(ssehttp.Config{Queue: broker, Progress: pb, Registry: reg, TracerProvider: p.tp, MeterProvider: p.mp})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &stack{broker: broker, store: pb, backend: qb, server: srv}
}

// start starts flowName over HTTP and returns the task's id.
func (s *stack) start(t *testing.T, flowName string, inputs string) string {
	t.Helper()
	return s.startWith(t, `{"flow": "`+flowName+`", "inputs": `+inputs+`}`, nil)
}

// startWith posts body to start-task with the headers of header and
// returns the task's id.
func (s *stack) startWith(t *testing.T, body string, header http.Header) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.server.URL+"/start-task/", strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "start-task: %s", b)
	var out struct {
		TaskID string `json:"task_id"`
	}
	require.NoError(t, json.Unmarshal(b, &out))
	return out.TaskID
}

// wait waits for task id to end and returns its final state.
func (s *stack) wait(t *testing.T, id string) progress.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		snap, _, err := s.store.Snapshot(context.Background(), id)
		require.NoError(t, err)
		if snap.State.Terminal() {
			return snap.State
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.FailNow(t, "task did not end in time", "task %s", id)
	return ""
}

// runWorker runs w until the test ends.
func runWorker(t *testing.T, w *queue.Worker) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}
