package oteltest_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// metrics is one collection, flattened: each data point's value (a sum's
// or a gauge's value, a histogram's count) by instrument name and by its
// attributes as "key=value,..." in key order.
type metrics map[string]map[string]float64

func collect(t *testing.T, r *sdkmetric.ManualReader) metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			points := map[string]float64{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					points[attrKey(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					points[attrKey(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					points[attrKey(p.Attributes)] = float64(p.Count)
				}
			default:
				t.Fatalf("metric %s: unexpected data %T", m.Name, m.Data)
			}
			out[m.Name] = points
		}
	}
	return out
}

func attrKey(s attribute.Set) string {
	var b []byte
	for i, kv := range s.ToSlice() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, string(kv.Key)+"="+kv.Value.Emit()...)
	}
	return string(b)
}

// waitMetrics collects until ok holds.
func waitMetrics(t *testing.T, r *sdkmetric.ManualReader, ok func(metrics) bool) metrics {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := collect(t, r)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "the metrics did not come", "%v", m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMetrics runs tasks on both backends and checks every metric of the
// broker, the worker and the handler.
func TestMetrics(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			qb, pb, store := be.make(t)
			s := newStack(t, qb, pb, store, providers{mp: mp}, false)
			ctx := context.Background()

			flakyID := s.start(t, flaky, `{}`)
			chainID := s.start(t, chain, `{"topic": "otters"}`)
			later, err := s.broker.Enqueue(ctx, flaky, nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
			require.NoError(t, err)
			cancelled, err := s.broker.Enqueue(ctx, flaky, nil, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})
			require.NoError(t, err)
			require.NoError(t, s.broker.Cancel(ctx, cancelled))
			require.Equal(t, progress.StateSuccess, s.wait(t, flakyID))
			require.Equal(t, progress.StateSuccess, s.wait(t, chainID))

			m := waitMetrics(t, reader, func(m metrics) bool {
				d := m["flows.queue.depth"]
				return len(m["flows.task.run.duration"]) == 3 &&
					d["flows.queue.state=ready"] == 0 && d["flows.queue.state=running"] == 0
			})
			assert.Equal(t, map[string]float64{"flows.flow=flaky": 3, "flows.flow=chain": 1}, m["flows.tasks.enqueued"])
			assert.Equal(t, map[string]float64{"flows.flow=flaky": 2, "flows.flow=chain": 1}, m["flows.tasks.started"])
			assert.Equal(t, map[string]float64{
				"flows.flow=flaky,flows.task.state=SUCCESS": 1,
				"flows.flow=chain,flows.task.state=SUCCESS": 1,
				"flows.flow=flaky,flows.task.state=FAILURE": 1, // cancelled while pending
			}, m["flows.tasks.ended"])
			assert.Equal(t, map[string]float64{
				"flows.flow=flaky,flows.run.outcome=retry":   1,
				"flows.flow=flaky,flows.run.outcome=success": 1,
				"flows.flow=chain,flows.run.outcome=success": 1,
			}, m["flows.task.run.duration"], "one duration per run")
			assert.Equal(t, map[string]float64{"flows.flow=flaky": 1, "flows.flow=chain": 1}, m["flows.task.pickup.latency"],
				"first attempts only, not the cancelled task")
			assert.Equal(t, map[string]float64{
				"flows.queue.state=ready": 0, "flows.queue.state=delayed": 1, "flows.queue.state=running": 0,
				"flows.queue.state=hooks_waiting": 0,
			}, m["flows.queue.depth"])
			events := m["flows.events.published"]
			assert.GreaterOrEqual(t, events["flows.event.type=state"], 4.0, "a start and an end for each run but the retried one's end: %v", events)
			assert.GreaterOrEqual(t, events["flows.event.type=step"], 5.0, "the retry's log and the chain's steps: %v", events)

			// An open task-status stream is counted while it is open.
			sctx, closeStream := context.WithCancel(ctx)
			req, err := http.NewRequestWithContext(sctx, http.MethodGet, s.server.URL+"/task-status/"+later+"/", nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			waitMetrics(t, reader, func(m metrics) bool { return m["flows.sse.streams"][""] == 1 })
			closeStream()
			waitMetrics(t, reader, func(m metrics) bool { return m["flows.sse.streams"][""] == 0 })
		})
	}
}

// TestMetricCounts: the worker's counters, kept per flow and event type
// and read at collection, report exactly what was counted, on both
// backends; a count that was never added to (this flow's FAILURE) is
// not reported, not even as zero.
func TestMetricCounts(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			qb, pb, store := be.make(t)
			reg := registry.New()
			reg.MustRegister("counted", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
				t.Progress.Status("working")
				t.Progress.Progress(50, "half")
				t.Progress.Progress(100, "done")
				return "ok", nil
			}))
			broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, MeterProvider: mp})
			w := queue.NewWorker(qb, store, queue.WorkerConfig{Registry: reg, Concurrency: 2, MeterProvider: mp})
			runWorker(t, w)
			s := &stack{broker: broker, store: pb, backend: qb}
			const n = 3
			for range n {
				id, err := broker.Enqueue(context.Background(), "counted", nil, queue.EnqueueOptions{})
				require.NoError(t, err)
				require.Equal(t, progress.StateSuccess, s.wait(t, id))
			}
			m := waitMetrics(t, reader, func(m metrics) bool {
				return len(m["flows.task.run.duration"]) == 1 && m["flows.task.run.duration"]["flows.flow=counted,flows.run.outcome=success"] == n
			})
			assert.Equal(t, map[string]float64{"flows.flow=counted": n}, m["flows.tasks.enqueued"])
			assert.Equal(t, map[string]float64{"flows.flow=counted": n}, m["flows.tasks.started"])
			assert.Equal(t, map[string]float64{"flows.flow=counted,flows.task.state=SUCCESS": n}, m["flows.tasks.ended"])
			assert.Equal(t, map[string]float64{"flows.flow=counted": n}, m["flows.task.pickup.latency"])
			assert.Equal(t, map[string]float64{
				"flows.event.type=state":    2 * n, // its start and its end
				"flows.event.type=status":   n,
				"flows.event.type=progress": 2 * n,
			}, m["flows.events.published"])
		})
	}
}

// leaseShifter is a backend whose leases say they were taken a given
// time after their task was enqueued (see TestPickupLatencyIsToTheLease).
type leaseShifter struct {
	queue.Backend
	lease, after time.Duration
}

func (b leaseShifter) Fetch(ctx context.Context, worker string, max int, lease time.Duration) ([]*queue.Lease, error) {
	leases, err := b.Backend.Fetch(ctx, worker, max, lease)
	for _, l := range leases {
		l.Deadline = l.Task.EnqueuedAt.Add(b.after + b.lease)
	}
	return leases, err
}

// TestPickupLatencyIsToTheLease: the pickup latency is the time from
// when the task was ready to when the backend leased it, which a lease
// tells by its deadline less the lease's duration (Backend.Fetch leases
// until now+lease), not to when the worker got to the task.
func TestPickupLatencyIsToTheLease(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	const lease, after = time.Minute, 7 * time.Second
	qb := leaseShifter{Backend: queue.NewMemory(queue.MemoryConfig{}), lease: lease, after: after}
	reg := registry.New()
	reg.MustRegister("picked", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil }))
	broker := queue.NewBroker(qb, store, queue.BrokerConfig{Registry: reg, MeterProvider: mp})
	runWorker(t, queue.NewWorker(qb, store, queue.WorkerConfig{Registry: reg, Lease: lease, MeterProvider: mp}))
	id, err := broker.Enqueue(context.Background(), "picked", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	require.Equal(t, progress.StateSuccess, (&stack{store: store}).wait(t, id))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var pickup []metricdata.HistogramDataPoint[float64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "flows.task.pickup.latency" {
				pickup = m.Data.(metricdata.Histogram[float64]).DataPoints
			}
		}
	}
	require.Len(t, pickup, 1)
	assert.Equal(t, uint64(1), pickup[0].Count)
	assert.InDelta(t, after.Seconds(), pickup[0].Sum, 1e-6)
}

// TestIdempotentRepeatIsNotEnqueued: an Enqueue repeating an idempotency
// key gets the task the key made, and flows.tasks.enqueued counts that
// task once, not once per repeat, on both backends; a conflicting repeat
// is not counted either. The enqueue span of each repeat says it is one
// (flows.task.repeat), since the task's runs are not its children.
func TestIdempotentRepeatIsNotEnqueued(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			tp, rec := newTracer(t)
			qb, pb, store := be.make(t)
			s := newStack(t, qb, pb, store, providers{tp: tp, mp: mp}, true)
			ctx := context.Background()
			opts := queue.EnqueueOptions{IdempotencyKey: "order-42"}
			first, err := s.broker.Enqueue(ctx, flaky, nil, opts)
			require.NoError(t, err)
			for range 2 {
				again, err := s.broker.Enqueue(ctx, flaky, nil, opts)
				require.NoError(t, err)
				require.Equal(t, first, again)
			}
			_, err = s.broker.Enqueue(ctx, flaky, []byte(`{"other": 1}`), opts)
			require.ErrorIs(t, err, queue.ErrIdempotencyConflict)
			_, err = s.broker.Enqueue(ctx, flaky, nil, queue.EnqueueOptions{IdempotencyKey: "order-43"})
			require.NoError(t, err)

			m := collect(t, reader)
			assert.Equal(t, map[string]float64{"flows.flow=flaky": 2}, m["flows.tasks.enqueued"], "two keys, two tasks")
			assert.Equal(t, float64(2), m["flows.queue.depth"]["flows.queue.state=ready"])

			var repeats []string
			for _, sp := range spanTree(readSpans(rec.Ended())).of("flows.enqueue", keyTask, first) {
				repeats = append(repeats, sp.Attrs["flows.task.repeat"])
			}
			assert.ElementsMatch(t, []string{"", "true", "true", ""}, repeats, "the first, two repeats, the conflict")
		})
	}
}

// logRecorder is a slog.Handler keeping the records logged with an
// instrument attribute, as the telemetry's own log lines have.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// depthLogs returns the levels and messages of the records about
// flows.queue.depth.
func (l *logRecorder) depthLogs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "instrument" && a.Value.String() == "flows.queue.depth" {
				out = append(out, r.Level.String()+" "+r.Message)
				return false
			}
			return true
		})
	}
	return out
}

// namesExporter is a metric exporter that keeps the names of the
// instruments of each export.
type namesExporter struct {
	mu      sync.Mutex
	exports [][]string
}

func (e *namesExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (e *namesExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *namesExporter) Export(_ context.Context, rm *metricdata.ResourceMetrics) error {
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names = append(names, m.Name)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports = append(e.exports, names)
	return nil
}

func (e *namesExporter) last() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.exports) == 0 {
		return nil
	}
	return e.exports[len(e.exports)-1]
}

func (e *namesExporter) ForceFlush(context.Context) error { return nil }
func (e *namesExporter) Shutdown(context.Context) error   { return nil }

// TestQueueDepthWhileRedisIsDown: while Redis is down, the depth gauge
// observes nothing and its callback returns no error to the SDK, which
// would hand it to the global error handler at every collection (the
// stdlib log unless one is installed) and, with a periodic reader, export
// none of the other metrics either. The broker's Logger says so once per
// outage, and once when the depth can be read again.
func TestQueueDepthWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	// A short OpTimeout: each read of the depth while Redis is down waits
	// for it.
	b, err := redisbackend.New(srv.Client(t), redisbackend.Config{OpTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	manual := sdkmetric.NewManualReader()
	exp := &namesExporter{}
	periodic := sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(manual), sdkmetric.WithReader(periodic))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	logs := &logRecorder{}
	broker := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: newRegistry(), MeterProvider: mp, Logger: slog.New(logs)})
	ctx := context.Background()
	_, err = broker.Enqueue(ctx, flaky, nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	require.Equal(t, float64(1), collect(t, manual)["flows.queue.depth"]["flows.queue.state=ready"])

	down := func() {
		t.Helper()
		srv.Stop()
		for range 3 {
			var rm metricdata.ResourceMetrics
			assert.NoError(t, manual.Collect(ctx, &rm), "a collection while Redis is down")
			names := map[string]bool{}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					names[m.Name] = true
				}
			}
			assert.False(t, names["flows.queue.depth"], "no depth is observed while it cannot be read")
			assert.True(t, names["flows.tasks.enqueued"], "the other metrics are collected")
		}
		assert.NoError(t, periodic.ForceFlush(ctx), "an export while Redis is down")
		assert.Contains(t, exp.last(), "flows.tasks.enqueued", "the other metrics are exported")
	}
	up := func() {
		t.Helper()
		srv.Restart()
		waitMetrics(t, manual, func(m metrics) bool { return len(m["flows.queue.depth"]) == 4 })
	}

	down()
	assert.Equal(t, []string{"WARN flows: reading the queue depth failed; flows.queue.depth reports nothing until it works again"},
		logs.depthLogs(), "one warning for the outage, not one per collection")
	up()
	collect(t, manual)
	assert.Equal(t, []string{
		"WARN flows: reading the queue depth failed; flows.queue.depth reports nothing until it works again",
		"INFO flows: reading the queue depth works again",
	}, logs.depthLogs())
	down()
	assert.Len(t, logs.depthLogs(), 3, "a new outage is logged again: %v", logs.depthLogs())
}
