package queue

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/registry"
)

// Limit is what a flow's policy (registry.Policy) limits of its starts,
// as a task carries it to the backend: the most tasks of the flow that
// run at once, and the most that start within any Per. The Broker sets
// it on the tasks it enqueues and the Worker on the tasks it leases, each
// from its registry, so both must register the flow with the same
// policy. It is not stored with a task.
//
// A backend holds a task whose Limit is on (see On) back, PENDING, with
// its Attempt untouched, until a slot of its flow is free and the rate
// allows a start: then the task takes a slot, and a start of the rate,
// and is ready. The start is the task's from then on, and is counted
// from the time a worker first leases the task, so that no window of Per
// holds more than Rate first leases of the flow's tasks, however long
// they were ready; a task whose lease is taken back keeps it, a retry
// takes a new one. The slot is
// the task's until the task is acknowledged, buried or given back
// (Retry): a task whose lease is taken back from a dead worker keeps its
// slot for its next attempt, and a worker that dies frees its slots as
// its leases are taken back and their tasks end. Tasks of other flows
// are not held up behind waiting ones.
type Limit struct {
	// Concurrency is the most tasks of the flow leased at once; zero for
	// no limit.
	Concurrency int
	// Rate is the most starts of the flow's tasks within any Per (see
	// above); zero for no limit.
	Rate int
	Per  time.Duration
}

// LimitOf returns the Limit of a flow's policy.
func LimitOf(p registry.Policy) Limit {
	l := Limit{Concurrency: max(p.Concurrency, 0)}
	if p.Rate > 0 && p.Per > 0 {
		l.Rate, l.Per = p.Rate, p.Per
	}
	return l
}

// On reports whether l limits anything.
func (l Limit) On() bool { return l.Concurrency > 0 || l.Rate > 0 }

// Waiting is the status line of a PENDING task of flow that waits for
// its flow's limits: "waiting for a slot of flow F (at most 2 at once)",
// with the rate when there is one ("..., 10 starts per 1m0s").
func (l Limit) Waiting(flow string) string {
	var b strings.Builder
	b.WriteString("waiting for a slot of flow ")
	b.WriteString(flow)
	b.WriteString(" (")
	if l.Concurrency > 0 {
		b.WriteString("at most ")
		b.WriteString(strconv.Itoa(l.Concurrency))
		b.WriteString(" at once")
	}
	if l.Rate > 0 {
		if l.Concurrency > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s per %s", plural(l.Rate, "start"), l.Per)
	}
	b.WriteString(")")
	return b.String()
}
