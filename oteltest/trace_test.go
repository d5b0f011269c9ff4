package oteltest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/telemetry"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// span is what the tests read of an ended span.
type span struct {
	Name     string            `json:"name"`
	Kind     string            `json:"kind"`
	TraceID  string            `json:"trace_id"`
	SpanID   string            `json:"span_id"`
	ParentID string            `json:"parent_id"`
	Status   string            `json:"status"`
	Attrs    map[string]string `json:"attrs"`
}

func readSpans(ended []sdktrace.ReadOnlySpan) []span {
	out := make([]span, 0, len(ended))
	for _, s := range ended {
		sp := span{
			Name: s.Name(), Kind: s.SpanKind().String(),
			TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
			Status: s.Status().Code.String(), Attrs: map[string]string{},
		}
		if s.Parent().IsValid() {
			sp.ParentID = s.Parent().SpanID().String()
		}
		for _, kv := range s.Attributes() {
			sp.Attrs[string(kv.Key)] = kv.Value.Emit()
		}
		out = append(out, sp)
	}
	return out
}

// spanTree is the spans of one test, to look up by name, task and parent.
type spanTree []span

// of returns the spans named name whose attribute key is value.
func (st spanTree) of(name string, key attribute.Key, value string) []span {
	var out []span
	for _, s := range st {
		if s.Name == name && s.Attrs[string(key)] == value {
			out = append(out, s)
		}
	}
	return out
}

// children returns the spans whose parent is p, by name.
func (st spanTree) children(p span) map[string][]span {
	out := map[string][]span{}
	for _, s := range st {
		if s.ParentID == p.SpanID && s.TraceID == p.TraceID {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	return out
}

// waitSpans waits until ok holds of the ended spans.
func waitSpans(t *testing.T, rec *tracetest.SpanRecorder, ok func(spanTree) bool) spanTree {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := spanTree(readSpans(rec.Ended()))
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "the spans did not come", "%d spans: %+v", len(st), st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The attribute keys the spans are read by.
const (
	keyTask    = telemetry.TaskID
	keyFlow    = telemetry.Flow
	keyAttempt = telemetry.Attempt
	keyOutcome = telemetry.Outcome
	keyState   = telemetry.State
)

// TestTaskTrace starts tasks over HTTP and checks the span tree of each:
// start-task, then enqueue, then one run per attempt, then the steps of a
// langchaingo flow with their tool and model calls, all in one trace, on
// both backends.
func TestTaskTrace(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			tp, rec := newTracer(t)
			qb, pb, store := be.make(t)
			s := newStack(t, qb, pb, store, providers{tp: tp}, false)
			flakyID := s.start(t, flaky, `{}`)
			chainID := s.start(t, chain, `{"topic": "otters"}`)
			require.Equal(t, progress.StateSuccess, s.wait(t, flakyID))
			require.Equal(t, progress.StateSuccess, s.wait(t, chainID))
			st := waitSpans(t, rec, func(st spanTree) bool {
				return len(st.of("flows.run", keyTask, flakyID)) == 2 && len(st.of("flows.run", keyTask, chainID)) == 1
			})

			t.Run("retried task", func(t *testing.T) {
				starts := st.of("flows.start_task", keyTask, flakyID)
				require.Len(t, starts, 1)
				start := starts[0]
				assert.Empty(t, start.ParentID, "start-task is the root: the request has no trace")
				assert.Equal(t, trace.SpanKindServer.String(), start.Kind)
				assert.Equal(t, flaky, start.Attrs[string(keyFlow)])
				assert.Equal(t, "200", start.Attrs["http.response.status_code"])

				enq := st.children(start)["flows.enqueue"]
				require.Len(t, enq, 1, "enqueue is a child of start-task")
				assert.Equal(t, trace.SpanKindProducer.String(), enq[0].Kind)
				assert.Equal(t, flakyID, enq[0].Attrs[string(keyTask)])

				runs := st.children(enq[0])["flows.run"]
				require.Len(t, runs, 2, "each attempt is a child of enqueue, in the same trace")
				slices.SortFunc(runs, func(a, b span) int { return int(a.Attrs[string(keyAttempt)][0]) - int(b.Attrs[string(keyAttempt)][0]) })
				for i, r := range runs {
					assert.Equal(t, start.TraceID, r.TraceID)
					assert.Equal(t, trace.SpanKindConsumer.String(), r.Kind)
					assert.Equal(t, fmt.Sprint(i+1), r.Attrs[string(keyAttempt)])
					assert.Equal(t, flaky, r.Attrs[string(keyFlow)])
				}
				assert.Equal(t, "retry", runs[0].Attrs[string(keyOutcome)])
				assert.Equal(t, codes.Error.String(), runs[0].Status, "the failed attempt")
				assert.Equal(t, "success", runs[1].Attrs[string(keyOutcome)])
				assert.Equal(t, string(progress.StateSuccess), runs[1].Attrs[string(keyState)])
				assert.NotEqual(t, codes.Error.String(), runs[1].Status)
			})

			t.Run("langchaingo steps", func(t *testing.T) {
				runs := st.of("flows.run", keyTask, chainID)
				require.Len(t, runs, 1)
				run := runs[0]
				enq := st.of("flows.enqueue", keyTask, chainID)
				require.Len(t, enq, 1)
				assert.Equal(t, enq[0].SpanID, run.ParentID)
				assert.Equal(t, enq[0].TraceID, run.TraceID)

				steps := st.children(run)
				require.Len(t, steps["step Searching"], 1, "children of the run: %v", steps)
				require.Len(t, steps["step Summarising"], 1, "children of the run: %v", steps)
				assert.Equal(t, "Searching", steps["step Searching"][0].Attrs["flows.step.name"])

				tools := st.children(steps["step Searching"][0])["execute_tool search"]
				require.Len(t, tools, 1, "the tool call is a child of its step")
				assert.Equal(t, "search", tools[0].Attrs["gen_ai.tool.name"])
				assert.Equal(t, "execute_tool", tools[0].Attrs["gen_ai.operation.name"])

				chats := st.children(steps["step Summarising"][0])["chat"]
				require.Len(t, chats, 1, "the model call is a child of its step: %v", st.children(steps["step Summarising"][0]))
				chat := chats[0]
				assert.Equal(t, trace.SpanKindClient.String(), chat.Kind, "a model call is a client span")
				assert.Equal(t, "chat", chat.Attrs["gen_ai.operation.name"])
				assert.Equal(t, "true", chat.Attrs["gen_ai.request.stream"], "the flow streams the model's answer")
				for _, key := range []string{"gen_ai.request.model", "gen_ai.provider.name", "gen_ai.system",
					"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"} {
					assert.NotContains(t, chat.Attrs, key, "nothing tells it")
				}
			})
		})
	}
}

// TestModelCallSpan: a model call named in its call options is a client
// span "chat <model>" with the GenAI attributes of OpenTelemetry's
// semantic conventions that langchaingo tells: the model requested, and
// the token counts the answer carries.
func TestModelCallSpan(t *testing.T) {
	tp, rec := newTracer(t)
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	s := newStack(t, queue.NewMemory(queue.MemoryConfig{}), store, store, providers{tp: tp}, false)
	id := s.start(t, namedModel, `{"topic": "otters"}`)
	require.Equal(t, progress.StateSuccess, s.wait(t, id))
	st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, id)) == 1 })

	steps := st.children(st.of("flows.run", keyTask, id)[0])["step Answering"]
	require.Len(t, steps, 1)
	calls := st.children(steps[0])
	chats := calls["chat "+namedModelName]
	require.Len(t, chats, 1, "children of the step: %v", calls)
	chat := chats[0]
	assert.Equal(t, trace.SpanKindClient.String(), chat.Kind)
	assert.Equal(t, map[string]string{
		"gen_ai.operation.name":      "chat",
		"gen_ai.request.model":       namedModelName,
		"gen_ai.request.stream":      "true",
		"gen_ai.usage.input_tokens":  "12",
		"gen_ai.usage.output_tokens": "5",
	}, chat.Attrs)
}

// TestDescribedModelCallSpan: a model described with lcflow.DescribedModel
// names its provider in gen_ai.provider.name, and its model in the span's
// name and gen_ai.request.model when the call options name none; a model
// the call options name takes its place.
func TestDescribedModelCallSpan(t *testing.T) {
	for _, tc := range []struct{ flow, model string }{
		{describedModel, describedInfo.Model},
		{describedNamed, namedModelName},
	} {
		t.Run(tc.flow, func(t *testing.T) {
			tp, rec := newTracer(t)
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			s := newStack(t, queue.NewMemory(queue.MemoryConfig{}), store, store, providers{tp: tp}, false)
			id := s.start(t, tc.flow, `{"topic": "otters"}`)
			require.Equal(t, progress.StateSuccess, s.wait(t, id))
			st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, id)) == 1 })

			steps := st.children(st.of("flows.run", keyTask, id)[0])["step Answering"]
			require.Len(t, steps, 1)
			calls := st.children(steps[0])
			chats := calls["chat "+tc.model]
			require.Len(t, chats, 1, "children of the step: %v", calls)
			assert.Equal(t, map[string]string{
				"gen_ai.operation.name":      "chat",
				"gen_ai.provider.name":       describedInfo.Provider,
				"gen_ai.request.model":       tc.model,
				"gen_ai.request.stream":      "true",
				"gen_ai.usage.input_tokens":  "12",
				"gen_ai.usage.output_tokens": "5",
			}, chats[0].Attrs)
		})
	}
}

// TestTraceContinuesTheRequestsTrace: a start-task request carrying a
// traceparent header puts the task in that trace.
func TestTraceContinuesTheRequestsTrace(t *testing.T) {
	tp, rec := newTracer(t)
	qb, pb, store := backends[0].make(t)
	s := newStack(t, qb, pb, store, providers{tp: tp}, true)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	id := s.startWith(t, `{"flow": "flaky"}`, http.Header{"Traceparent": {parent}})
	st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.start_task", keyTask, id)) == 1 })
	start := st.of("flows.start_task", keyTask, id)[0]
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", start.TraceID)
	assert.Equal(t, "00f067aa0ba902b7", start.ParentID)
	task, err := s.backend.Get(context.Background(), id)
	require.NoError(t, err)
	enq := st.children(start)["flows.enqueue"]
	require.Len(t, enq, 1)
	assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+enq[0].SpanID+"-01", task.TraceParent,
		"the task carries the enqueue span's context")
}

// TestUnsampledTaskRunsUntraced: the sampling decision is made once per
// task, where it is enqueued: a task enqueued in a trace that was not
// sampled starts no span when it runs, even on a worker whose sampler
// would sample it; one enqueued in a sampled trace is traced there.
func TestUnsampledTaskRunsUntraced(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	qb, pb, store := backends[0].make(t)
	reg := newRegistry()
	// The broker traces nothing: its tasks carry the trace they are
	// enqueued in as it came.
	broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, TracerProvider: noop.NewTracerProvider()})
	w := queue.NewWorker(qb, store, queue.WorkerConfig{Registry: reg, Concurrency: 2, TracerProvider: tp,
		Backoff: func(int) time.Duration { return 0 }})
	runWorker(t, w)
	s := &stack{broker: broker, store: pb, backend: qb}

	enqueue := func(parent string) string {
		sc := telemetry.SpanContext(parent, "")
		require.True(t, sc.IsValid())
		id, err := broker.Enqueue(trace.ContextWithRemoteSpanContext(context.Background(), sc), flaky, nil, queue.EnqueueOptions{})
		require.NoError(t, err)
		return id
	}
	unsampled := enqueue("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
	sampled := enqueue("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	require.Equal(t, progress.StateSuccess, s.wait(t, unsampled))
	require.Equal(t, progress.StateSuccess, s.wait(t, sampled))

	st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, sampled)) == 2 })
	for _, r := range st.of("flows.run", keyTask, sampled) {
		assert.Equal(t, "0af7651916cd43dd8448eb211c80319c", r.TraceID)
		assert.Equal(t, "b7ad6b7169203331", r.ParentID)
	}
	assert.Empty(t, st.of("flows.run", keyTask, unsampled), "the runs of a task whose trace was not sampled")
}

// TestUnsampledTaskFlowKeepsItsTrace: a task whose trace was not sampled
// where it was enqueued runs with no span of the worker's, on both
// backends, and its flow still runs in the task's trace: it sees the
// enqueue span's context (remote, not sampled), so that the spans it
// starts are not sampled on their own under a parent-based sampler.
func TestUnsampledTaskFlowKeepsItsTrace(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			// One trace in none sampled at the broker; the worker's
			// sampler would sample every trace of its own.
			btp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())), sdktrace.WithSpanProcessor(rec))
			wtp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())), sdktrace.WithSpanProcessor(rec))
			t.Cleanup(func() {
				_ = btp.Shutdown(context.Background())
				_ = wtp.Shutdown(context.Background())
			})
			qb, pb, store := be.make(t)
			reg := newRegistry()
			seen := make(chan trace.SpanContext, 1)
			reg.MustRegister("probe", flow.Func(func(ctx context.Context, _ *flow.Task) (any, error) {
				_, sp := wtp.Tracer("probe").Start(ctx, "probe.step")
				sp.End()
				seen <- trace.SpanContextFromContext(ctx)
				return "ok", nil
			}))
			broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, TracerProvider: btp})
			// Enqueued before the worker runs, to read the task's record.
			id, err := broker.Enqueue(context.Background(), "probe", nil, queue.EnqueueOptions{})
			require.NoError(t, err)
			task, err := qb.Get(context.Background(), id)
			require.NoError(t, err)
			carried := telemetry.SpanContext(task.TraceParent, task.TraceState)
			require.True(t, carried.IsValid(), "the task carries its trace, sampled or not: %q", task.TraceParent)
			require.False(t, carried.IsSampled())

			w := queue.NewWorker(qb, store, queue.WorkerConfig{Registry: reg, Concurrency: 2, TracerProvider: wtp})
			runWorker(t, w)
			s := &stack{broker: broker, store: pb, backend: qb}

			require.Equal(t, progress.StateSuccess, s.wait(t, id))

			sc := <-seen
			assert.Equal(t, carried.TraceID(), sc.TraceID(), "the flow runs in the task's trace")
			assert.Equal(t, carried.SpanID(), sc.SpanID(), "under the enqueue span: no run span between")
			assert.True(t, sc.IsRemote())
			assert.False(t, sc.IsSampled())
			assert.Empty(t, rec.Ended(), "no span recorded: not the enqueue, the run nor the flow's")
		})
	}
}

// TestLangchaingoSpansEndOnPanic: a tool or a model that panics fails the
// task, and the spans of its call and of its step end, with an error
// status, instead of being left open (never exported).
func TestLangchaingoSpansEndOnPanic(t *testing.T) {
	for _, name := range []string{toolPanics, modelPanics} {
		t.Run(name, func(t *testing.T) {
			tp, rec := newTracer(t)
			store := progress.NewMemoryStore(progress.MemoryConfig{})
			s := newStack(t, queue.NewMemory(queue.MemoryConfig{}), store, store, providers{tp: tp}, false)
			id := s.start(t, name, `{"topic": "otters"}`)
			require.Equal(t, progress.StateFailure, s.wait(t, id))
			st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, id)) == 1 })

			ended := map[trace.SpanID]bool{}
			for _, s := range rec.Ended() {
				ended[s.SpanContext().SpanID()] = true
			}
			for _, s := range rec.Started() {
				assert.True(t, ended[s.SpanContext().SpanID()], "span %q was never ended", s.Name())
			}
			run := st.of("flows.run", keyTask, id)[0]
			step, call := "step Searching", "execute_tool search"
			if name == modelPanics {
				step, call = "step Summarising", "chat"
			}
			steps := st.children(run)[step]
			require.Len(t, steps, 1, "children of the run: %v", st.children(run))
			assert.Equal(t, codes.Error.String(), steps[0].Status)
			calls := st.children(steps[0])[call]
			require.Len(t, calls, 1, "children of the step: %v", st.children(steps[0]))
			assert.Equal(t, codes.Error.String(), calls[0].Status)
		})
	}
}

// TestLangchaingoSpansRedactErrors: the error of a tool that quotes a
// URL with a secret in its query reaches the spans of its call and step
// (status and exception event) with the secret masked, as it reaches the
// run's span, the task's status and the logs.
func TestLangchaingoSpansRedactErrors(t *testing.T) {
	tp, rec := newTracer(t)
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	s := newStack(t, queue.NewMemory(queue.MemoryConfig{}), store, store, providers{tp: tp}, false)
	id := s.start(t, toolLeaks, `{"topic": "otters"}`)
	require.Equal(t, progress.StateFailure, s.wait(t, id))
	st := waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, id)) == queue.DefaultMaxAttempts })

	var calls int
	for _, sp := range rec.Ended() {
		if sp.Name() == "execute_tool search" {
			calls++
			assert.Equal(t, codes.Error, sp.Status().Code)
			assert.Contains(t, sp.Status().Description, "api_key=xxxxx")
		}
		assert.NotContains(t, sp.Status().Description, apiSecret, "status of %q", sp.Name())
		for _, ev := range sp.Events() {
			for _, a := range ev.Attributes {
				assert.NotContains(t, a.Value.Emit(), apiSecret, "event %q of %q", ev.Name, sp.Name())
			}
		}
	}
	assert.Equal(t, queue.DefaultMaxAttempts, calls, "spans: %v", st)
}

// secretStore is a progress store whose Create fails with an error
// quoting a URL with credentials, as the driver of a store of your own
// (an SQL database, an HTTP service) may.
type secretStore struct{ progress.Store }

func (secretStore) Create(context.Context, string) error {
	return errors.New(`dial "postgres://flows:` + apiSecret + `@db.example:5432/flows?sslmode=require": connection refused`)
}

// TestEnqueueSpanRedactsErrors: an enqueue that fails on an error
// quoting credentials ends its span with the error's text redacted, as
// the run's span and lcflow's spans have it.
func TestEnqueueSpanRedactsErrors(t *testing.T) {
	tp, rec := newTracer(t)
	store := secretStore{progress.NewMemoryStore(progress.MemoryConfig{})}
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{Registry: newRegistry(), TracerProvider: tp})
	_, err := broker.Enqueue(context.Background(), flaky, nil, queue.EnqueueOptions{})
	require.Error(t, err)

	var enqueues int
	for _, sp := range rec.Ended() {
		if sp.Name() != "flows.enqueue" {
			continue
		}
		enqueues++
		assert.Equal(t, codes.Error, sp.Status().Code)
		assert.Contains(t, sp.Status().Description, "postgres://flows:xxxxx@db.example")
		assert.NotContains(t, sp.Status().Description, apiSecret)
	}
	assert.Equal(t, 1, enqueues)
}

// TestRunSpanStatusIsCut: the error status of a run that will be retried
// is cut to the worker's MaxReportBytes, as the status of a run that
// fails for good is (the task's failure reason).
func TestRunSpanStatusIsCut(t *testing.T) {
	const limit = 100
	tp, rec := newTracer(t)
	long := strings.Repeat("the upstream answered a very long error page. ", 50)
	reg := registry.New()
	reg.MustRegister("long_error", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, errors.New(long)
	}))
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	qb := queue.NewMemory(queue.MemoryConfig{})
	broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, TracerProvider: tp})
	runWorker(t, queue.NewWorker(qb, store, queue.WorkerConfig{
		Registry: reg, TracerProvider: tp, MaxReportBytes: limit,
		Backoff: func(int) time.Duration { return 0 },
	}))
	id, err := broker.Enqueue(context.Background(), "long_error", nil, queue.EnqueueOptions{MaxAttempts: 2})
	require.NoError(t, err)
	waitSpans(t, rec, func(st spanTree) bool { return len(st.of("flows.run", keyTask, id)) == 2 })

	for _, sp := range rec.Ended() {
		if sp.Name() != "flows.run" {
			continue
		}
		assert.Equal(t, codes.Error, sp.Status().Code)
		assert.LessOrEqual(t, len(sp.Status().Description), limit, "%q", sp.Status().Description)
		assert.Contains(t, sp.Status().Description, "cut from")
	}
}
