package queue

import (
	"container/heap"
	"strings"
	"time"
)

// The Memory backend's part of recovery in seconds (see WorkerRegistry):
// each heartbeat records until when its worker may stay silent
// (Memory.deadlines), and one whose own previous deadline had not passed
// takes back the leases of the workers whose deadline has: their tasks
// are made ready at once, ahead of their lease deadline, and the next
// attempt learns that the worker was lost (EndWorkerLost). A lease's token
// names the worker that holds it ("<worker>#<n>", see Fetch).

// beatDeadline records that w may stay silent until now plus its
// DeadAfter, and takes back the leases of the dead workers if w's
// previous deadline had not passed. m.mu is held.
func (m *Memory) beatDeadline(w WorkerInfo, now time.Time) {
	prev, known := m.deadlines[w.Name]
	m.deadlines[w.Name] = now.Add(w.DeadAfter())
	if known && !prev.Before(now) {
		m.reclaim(now)
	}
}

// reclaim makes ready the tasks leased to the workers whose deadline has
// passed, and forgets those deadlines. m.mu is held.
func (m *Memory) reclaim(now time.Time) {
	dead := map[string]bool{}
	for name, at := range m.deadlines {
		if at.Before(now) {
			dead[name] = true
			delete(m.deadlines, name)
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
		mt.task.PreviousEnd = EndWorkerLost
		m.makeReady(mt)
	}
}
