package queue

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/flowsrun/flows/progress"
)

// StatsWindow is the period over which Stats measures throughput and
// latency: the last minute.
const StatsWindow = time.Minute

// LatencySample bounds the tasks whose times Stats reads to measure
// latency: the most recent ones that ended within StatsWindow. A backend
// passes at most that many to Throughput.Measure.
const LatencySample = 200

// Stats is a picture of a queue at one moment.
type Stats struct {
	// At is when it was taken.
	At time.Time `json:"at"`
	// Counts are the tasks the backend holds, by the state of their
	// progress record. A task waiting between two attempts is PROGRESS
	// (it started and has not ended) though no worker runs it: Running,
	// not Counts.Progress, is what runs now.
	Counts StateCounts `json:"counts"`
	// Flows are the same counts for each flow with any task, by name.
	Flows []FlowCounts `json:"flows"`
	// Ready is the number of tasks due and waiting for a worker; Delayed
	// the number waiting for their start time or a retry; Running the
	// number leased to a worker now: the backend's Depth, when it is a
	// DepthReader. A task waiting for its retry is Delayed, not Running.
	//
	// A task cancelled while it waits for a worker (pending, or delayed:
	// Cancel makes a delayed task ready, so that a worker ends it without
	// waiting out the delay) keeps its place in the queue until a worker
	// takes it and drops it without running it. It is never Delayed. The
	// Memory backend does not count it in Ready either. The Redis backend
	// does, and its wait in OldestReady, until a worker takes it: the
	// Redis stream keeps the task's entry, and the backend cannot find a
	// task's entry from its id without scanning the stream. With idle
	// workers that is at their next fetch; behind a backlog, once the
	// workers reach it. A cancelled pending task is FAILURE in Counts at
	// once on both.
	Ready   int64 `json:"ready"`
	Delayed int64 `json:"delayed"`
	Running int64 `json:"running"`
	// HooksWaiting is the number of tasks that have ended and wait for a
	// later time to run their finish hooks again (queue.ErrRetryHooks):
	// the backend's Depth, as for Ready. They are in their terminal state
	// in Counts, and not Delayed: no run of their flow waits. A number
	// that grows says that a hook cannot do its work (the database of a
	// history hook is away, say).
	HooksWaiting int64 `json:"hooks_waiting"`
	// OldestReady is when the task that has waited longest for a worker
	// became ready; zero when none waits. On Redis, that may be a
	// cancelled task that no worker has dropped yet (see Ready).
	OldestReady time.Time `json:"oldest_ready,omitzero"`
	// Dead is the size of the dead-letter set.
	Dead int64 `json:"dead"`
	// LastMinute is throughput and latency over StatsWindow.
	LastMinute Throughput `json:"last_minute"`
	// Workers are the workers of the registry (see WorkerRegistry), by
	// name; empty when the backend keeps none.
	Workers []WorkerStatus `json:"workers"`
}

// StateCounts counts tasks by state.
type StateCounts struct {
	Pending  int64 `json:"PENDING"`
	Progress int64 `json:"PROGRESS"`
	Success  int64 `json:"SUCCESS"`
	Failure  int64 `json:"FAILURE"`
}

// add counts one task in state s.
func (c *StateCounts) add(s progress.State, n int64) {
	switch s {
	case progress.StatePending:
		c.Pending += n
	case progress.StateProgress:
		c.Progress += n
	case progress.StateSuccess:
		c.Success += n
	case progress.StateFailure:
		c.Failure += n
	}
}

// Total is the sum of the counts.
func (c StateCounts) Total() int64 { return c.Pending + c.Progress + c.Success + c.Failure }

// FlowCounts are the counts of one flow.
type FlowCounts struct {
	Flow   string      `json:"flow"`
	Counts StateCounts `json:"counts"`
}

// Throughput is what ended within a window, and how long it took.
type Throughput struct {
	// Window is the length of the window (StatsWindow).
	Window time.Duration `json:"-"`
	// Succeeded and Failed count the tasks that ended so within it.
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	// PerSecond is (Succeeded+Failed) per second of the window.
	PerSecond float64 `json:"per_second"`
	// Wait is the time from enqueue to the start of the last run, and Run
	// the time from that start to the end, over the Sampled most recent
	// tasks that ended within the window and ran.
	Wait    Latency `json:"wait"`
	Run     Latency `json:"run"`
	Sampled int     `json:"sampled"`
}

// MarshalJSON writes the window in seconds, as "window_seconds".
func (t Throughput) MarshalJSON() ([]byte, error) {
	type plain Throughput
	return json.Marshal(struct {
		WindowSeconds float64 `json:"window_seconds"`
		plain
	}{t.Window.Seconds(), plain(t)})
}

// Latency summarizes durations: median, 95th percentile and maximum.
type Latency struct {
	P50, P95, Max time.Duration
}

// MarshalJSON writes the durations in milliseconds: {"p50_ms", "p95_ms",
// "max_ms"}.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return json.Marshal(struct {
		P50 float64 `json:"p50_ms"`
		P95 float64 `json:"p95_ms"`
		Max float64 `json:"max_ms"`
	}{ms(l.P50), ms(l.P95), ms(l.Max)})
}

// latencyOf summarizes ds, which it sorts.
func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(int(q*float64(len(ds))), len(ds)-1)] }
	return Latency{P50: at(0.5), P95: at(0.95), Max: ds[len(ds)-1]}
}

// Measure fills in PerSecond, Wait, Run and Sampled from the
// summaries of tasks that ended within the window (the most recent
// first, at most a few hundred: a backend passes a sample), with Window,
// Succeeded and Failed already set. Backends call it from TaskStats.
func (t *Throughput) Measure(ended []TaskSummary) {
	if t.Window > 0 {
		t.PerSecond = float64(t.Succeeded+t.Failed) / t.Window.Seconds()
	}
	var wait, run []time.Duration
	for _, s := range ended[:min(len(ended), LatencySample)] {
		if s.StartedAt.IsZero() || s.EndedAt.IsZero() {
			continue
		}
		run = append(run, max(s.EndedAt.Sub(s.StartedAt), 0))
		if !s.EnqueuedAt.IsZero() {
			wait = append(wait, max(s.StartedAt.Sub(s.EnqueuedAt), 0))
		}
	}
	t.Wait, t.Run, t.Sampled = latencyOf(wait), latencyOf(run), len(run)
}
