package queue

import (
	"time"
)

// memGate holds back the tasks of one flow with a Limit (see Limit): the
// Memory backend's side of a flow's limits.
type memGate struct {
	limit Limit
	// waiting are the due tasks that wait for a slot, in the order they
	// became due.
	waiting fifo[*memTask]
	// running counts the tasks that hold a slot (memTask.slot).
	running int
	// starts are the times tasks took a slot within the last limit.Per,
	// oldest first.
	starts []time.Time
}

// due makes mt, which is due, ready if it need not wait for its flow's
// limits, and queues it behind its flow's waiting tasks otherwise. A
// cancelled task does not wait: its worker ends it without running it.
// Nor does a task given back for its finish hooks (Task.HookRetries): it
// has ended, and its next lease runs the hooks only, not its flow.
// m.mu is held.
func (m *Memory) due(mt *memTask, now time.Time) {
	l := mt.task.Limit
	if !l.On() || mt.slot || mt.task.Cancelled || mt.task.HookRetries > 0 {
		m.makeReady(mt)
		return
	}
	g := m.gates[mt.task.Flow]
	if g == nil {
		g = &memGate{}
		m.gates[mt.task.Flow] = g
	}
	g.limit = l
	mt.state, mt.at, mt.token = memWaiting, time.Time{}, ""
	g.waiting.push(mt)
	m.gateAt(m.admit(g, now))
}

// gateAt records at, when the rate of a flow next lets a waiting task
// start (see admit), if it is sooner than the time recorded, and wakes the
// fetchers: one asleep with nothing to wait for must wake then. A zero at
// is no time. m.mu is held.
func (m *Memory) gateAt(at time.Time) {
	if at.IsZero() || (!m.gateNext.IsZero() && !at.Before(m.gateNext)) {
		return
	}
	m.gateNext = at
	m.broadcast()
}

// admit gives the free slots of g to its waiting tasks, oldest first, as
// far as its rate allows, and returns when the rate allows the next start
// (zero if it is not what holds the next task back). m.mu is held.
func (m *Memory) admit(g *memGate, now time.Time) time.Time {
	l := g.limit
	for g.waiting.len() > 0 {
		mt := g.waiting.peek()
		if mt.state != memWaiting { // cancelled meanwhile: ready already
			g.waiting.pop()
			continue
		}
		if l.Concurrency > 0 && g.running >= l.Concurrency {
			return time.Time{}
		}
		if l.Rate > 0 {
			cut := 0
			for cut < len(g.starts) && !g.starts[cut].After(now.Add(-l.Per)) {
				cut++
			}
			g.starts = g.starts[cut:]
			if len(g.starts) >= l.Rate {
				return g.starts[0].Add(l.Per)
			}
			g.starts = append(g.starts, now)
		}
		g.waiting.pop()
		mt.slot = true
		g.running++
		m.makeReady(mt)
	}
	return time.Time{}
}

// release frees the slot mt holds, if it holds one, and gives it to the
// next waiting task of its flow. m.mu is held.
func (m *Memory) release(mt *memTask, now time.Time) {
	if !mt.slot {
		return
	}
	mt.slot = false
	if g := m.gates[mt.task.Flow]; g != nil {
		g.running--
		m.gateAt(m.admit(g, now))
	}
}

// admitDue lets the waiting tasks that the passing of time allows start
// (see admit), and returns when the rate of a flow allows its next start,
// zero if none waits for that. m.mu is held.
func (m *Memory) admitDue(now time.Time) time.Time {
	var next time.Time
	for name, g := range m.gates {
		if g.waiting.len() == 0 && g.running == 0 && len(g.starts) == 0 {
			delete(m.gates, name)
			continue
		}
		if g.waiting.len() == 0 {
			for len(g.starts) > 0 && !g.starts[0].After(now.Add(-g.limit.Per)) {
				g.starts = g.starts[1:]
			}
			continue
		}
		if at := m.admit(g, now); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}
