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
	// starts are the times tasks let through were leased, within the
	// last limit.Per, oldest first: the starts of the rate's window.
	starts []time.Time
	// unstarted counts the tasks let through that no worker has leased
	// yet (memTask.unstarted): each holds a start of the rate until it
	// is leased, and then for limit.Per.
	unstarted int
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
// (zero if it is not what holds the next task back, or if only a lease of
// a task let through can tell: see started). A task let through holds a
// start of the rate from then on, and for Per from its lease: so no
// window of Per holds more than Rate leases of the flow's tasks let
// through, however long they waited for a worker. m.mu is held.
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
			if len(g.starts)+g.unstarted >= l.Rate {
				if len(g.starts) == 0 {
					return time.Time{}
				}
				return g.starts[0].Add(l.Per)
			}
			g.unstarted++
			mt.unstarted = true
		}
		g.waiting.pop()
		mt.slot = true
		g.running++
		m.makeReady(mt)
	}
	return time.Time{}
}

// started counts mt, leased at now, as a start of its flow's rate if it
// was let through and not leased since (memTask.unstarted): the rate's
// window holds it until now plus Per, when the fetchers look at the gate
// again. A task taken back from its worker has been counted already.
// m.mu is held.
func (m *Memory) started(mt *memTask, now time.Time) {
	if !mt.unstarted {
		return
	}
	mt.unstarted = false
	if g := m.gates[mt.task.Flow]; g != nil {
		g.unstarted--
		g.starts = append(g.starts, now)
		if g.waiting.len() > 0 {
			m.gateAt(now.Add(g.limit.Per))
		}
	}
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
		if g.waiting.len() == 0 && g.running == 0 && len(g.starts) == 0 && g.unstarted == 0 {
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
