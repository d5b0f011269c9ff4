package queue

import (
	"container/heap"
	"strings"
	"time"
)

// The Memory backend's part of recovery in seconds (see WorkerRegistry):
// each heartbeat records until when its worker may stay silent, and a
// worker that has been in contact for as long as that (see memBeats)
// takes back the leases of the workers whose deadline has passed: their
// tasks are made ready at once, ahead of their lease deadline, and the
// next attempt learns that the worker was lost (EndWorkerLost). A lease's
// token names the worker that holds it ("<worker>#<n>", see Fetch).

// memBeats is what the Memory backend keeps of a worker's heartbeats
// (Memory.beats): when the last one came, until when the worker may
// stay silent (that plus its DeadAfter), and since when its heartbeats
// have come without a gap: since its first, or its first after a gap of
// more than half its DeadAfter (a heartbeat that did not get through).
// A worker judges others only once it has been in contact for a DeadAfter
// of its own, so that one whose heartbeats were cut off (by a wrapper of
// the backend, in tests) does not find dead, when they come back, the
// workers whose heartbeats come back an interval after its own; that is
// the Redis backend's rule too.
type memBeats struct {
	last, deadline, since time.Time
}

// beatDeadline records that w beat at now, and takes back the leases of
// the dead workers if w has been in contact for its DeadAfter. m.mu is
// held.
func (m *Memory) beatDeadline(w WorkerInfo, now time.Time) {
	window := w.DeadAfter()
	beats, known := m.beats[w.Name]
	if !known || now.Sub(beats.last) > window/2 {
		beats.since = now
	}
	beats.last, beats.deadline = now, now.Add(window)
	m.beats[w.Name] = beats
	if now.Sub(beats.since) >= window {
		m.reclaim(now)
	}
}

// reclaim makes ready the tasks leased to the workers whose deadline has
// passed, and forgets those workers' deadlines. m.mu is held.
func (m *Memory) reclaim(now time.Time) {
	dead := map[string]bool{}
	for name, beats := range m.beats {
		if beats.deadline.Before(now) {
			dead[name] = true
			delete(m.beats, name)
		}
	}
	if len(dead) == 0 {
		return
	}
	for _, mt := range m.tasks {
		if mt.state != memLeased {
			continue
		}
		holder := mt.token[:max(strings.LastIndexByte(mt.token, '#'), 0)]
		if !dead[holder] {
			continue
		}
		heap.Remove(&m.timers, mt.index)
		mt.ended(EndWorkerLost)
		m.makeReady(mt)
	}
}
