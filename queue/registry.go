package queue

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"time"
)

// Defaults of the worker registry.
const (
	// DefaultHeartbeat is how often a Worker writes itself into the
	// registry when WorkerConfig.Heartbeat is zero: with MissedBeats, a
	// killed worker's tasks run again elsewhere within about four
	// seconds (see WorkerInfo.DeadAfter).
	DefaultHeartbeat = time.Second
	// MissedBeats is how many heartbeats a worker may miss before it is
	// taken for dead (WorkerInfo.Alive) and its tasks are taken back.
	MissedBeats = 3
)

// WorkerInfo is what the worker registry holds of one worker: what it
// says of itself with each heartbeat, and when it was last heard of.
// Whoever takes over a dead worker's tasks finds here the name the
// backend knows it by (its leases are held under it), how often it beats
// and how long its leases last.
type WorkerInfo struct {
	// Name is the worker's name (WorkerConfig.Name): the name its leases
	// are held under.
	Name string
	// Host and PID say where it runs.
	Host string
	PID  int
	// Slots is the most flows it runs at once (WorkerConfig.Concurrency);
	// Running how many tasks it held at its last heartbeat.
	Slots   int
	Running int
	// StartedAt is when its Run started.
	StartedAt time.Time
	// Heartbeat is the interval of its heartbeats, and Lease the length
	// of its leases (WorkerConfig.Lease).
	Heartbeat time.Duration
	Lease     time.Duration
	// LastSeen is when its last heartbeat reached the backend, by the
	// backend's clock (the Redis server's for Redis); set by the backend.
	LastSeen time.Time
}

// Alive reports whether the worker has beaten within MissedBeats of its
// heartbeat intervals before now.
func (w WorkerInfo) Alive(now time.Time) bool {
	return now.Sub(w.LastSeen) <= w.DeadAfter()
}

// DeadAfter is how long the worker may go without a heartbeat before it
// is taken for dead: MissedBeats of its intervals (of at least a
// millisecond), or the largest duration where that would overflow. A
// backend that keeps a registry takes back the leases of a worker silent
// for that long as soon as another worker beats, without waiting for the
// leases to pass (see WorkerRegistry).
func (w WorkerInfo) DeadAfter() time.Duration {
	if w.Heartbeat > math.MaxInt64/MissedBeats {
		return math.MaxInt64
	}
	return time.Duration(MissedBeats) * max(w.Heartbeat, time.Millisecond)
}

// workerJSON is the JSON form of a WorkerInfo: durations in milliseconds.
type workerJSON struct {
	Name        string    `json:"name"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	Slots       int       `json:"slots"`
	Running     int       `json:"running"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatMS int64     `json:"heartbeat_ms"`
	LeaseMS     int64     `json:"lease_ms"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	Alive       *bool     `json:"alive,omitempty"`
}

func (w WorkerInfo) toJSON() workerJSON {
	return workerJSON{
		Name: w.Name, Host: w.Host, PID: w.PID, Slots: w.Slots, Running: w.Running, StartedAt: w.StartedAt,
		HeartbeatMS: w.Heartbeat.Milliseconds(), LeaseMS: w.Lease.Milliseconds(), LastSeen: w.LastSeen,
	}
}

// MarshalJSON writes w with its durations in milliseconds:
// {"name", "host", "pid", "slots", "running", "started_at",
// "heartbeat_ms", "lease_ms", "last_seen"}.
func (w WorkerInfo) MarshalJSON() ([]byte, error) { return json.Marshal(w.toJSON()) }

// UnmarshalJSON reads what MarshalJSON writes.
func (w *WorkerInfo) UnmarshalJSON(b []byte) error {
	var j workerJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*w = WorkerInfo{
		Name: j.Name, Host: j.Host, PID: j.PID, Slots: j.Slots, Running: j.Running, StartedAt: j.StartedAt,
		Heartbeat: time.Duration(j.HeartbeatMS) * time.Millisecond, Lease: time.Duration(j.LeaseMS) * time.Millisecond,
		LastSeen: j.LastSeen,
	}
	return nil
}

// WorkerStatus is a WorkerInfo as Stats reports it, with whether the
// worker is alive.
type WorkerStatus struct {
	WorkerInfo
	// Alive is WorkerInfo.Alive at the time of the Stats.
	Alive bool
}

// MarshalJSON writes the WorkerInfo's JSON with "alive".
func (s WorkerStatus) MarshalJSON() ([]byte, error) {
	j := s.toJSON()
	j.Alive = &s.Alive
	return json.Marshal(j)
}

// WorkerRegistry is implemented by a Backend that keeps a registry of the
// workers that run its tasks. A Worker writes itself into it when Run
// starts and then every WorkerConfig.Heartbeat, one write each time
// whatever the number of tasks it runs, and leaves it when Run returns
// (through Retirer.Retire, which a registry's backend implements).
//
// The registry is also how a dead worker's tasks come back quickly: a
// Heartbeat that finds a worker silent for longer than its
// WorkerInfo.DeadAfter, by the backend's clock, takes back the leases
// that worker holds at once. From then on they are lost to it (Extend,
// Ack, Retry and Bury with them fail with ErrLeaseLost) and the next
// Fetch takes them over, the next attempt's Task.PreviousEnd being
// EndWorkerLost. A worker judges others only once its heartbeats have
// come without a gap for a whole DeadAfter of its own, counted from its
// first heartbeat, or from its first after a gap of more than half its
// DeadAfter (one of its heartbeats did not get through): one that was
// cut off itself (a Redis restart, a network split) would otherwise find
// dead the others, whose heartbeats may come back later than its own,
// and a whole window gives each of them time to beat again. A worker
// that never beat, or retired, has its leases wait out their deadline.
type WorkerRegistry interface {
	// Heartbeat records w, with LastSeen set to the backend's clock, and
	// takes back the leases of the workers found dead.
	Heartbeat(ctx context.Context, w WorkerInfo) error
	// Workers lists the registered workers by name, those that stopped
	// beating too until the backend forgets them (a worker that has not
	// beaten for ForgetWorkerAfter).
	Workers(ctx context.Context) ([]WorkerInfo, error)
}

// ForgetWorkerAfter is how long a registry keeps a worker that stopped
// beating without retiring (it died): long enough for whoever takes over
// its tasks to find it.
const ForgetWorkerAfter = time.Hour

// hostname is the host a Worker reports.
var hostname = func() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}()
