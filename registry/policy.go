package registry

import (
	"fmt"
	"slices"
	"time"
)

// Policy is how the workers run one flow's tasks, set at registration by
// the options Timeout, MaxAttempts, Backoff, Concurrency and Rate. A zero
// field sets nothing: the task takes the setting of the queue.Broker
// (time limit, attempts) or of the queue.Worker (backoff), and the flow
// has no limit on its starts.
type Policy struct {
	// Timeout is the time limit of one run of the flow's tasks, in place
	// of the Broker's default (queue.BrokerConfig.Timeout); a task's own
	// queue.EnqueueOptions.Timeout still wins.
	Timeout time.Duration
	// MaxAttempts is the number of runs a task of the flow gets, in place
	// of the Broker's default; a task's own EnqueueOptions.MaxAttempts
	// still wins.
	MaxAttempts int
	// Backoff gives the delay before a failed task's next attempt, in
	// place of the Worker's (queue.WorkerConfig.Backoff).
	Backoff func(attempt int) time.Duration
	// Concurrency is the most tasks of the flow that run at once, across
	// all the workers of a queue. Zero means no limit.
	Concurrency int
	// Rate is the most tasks of the flow that start (are leased by a
	// worker) within any Per (a sliding window), across all the workers
	// of a queue. Zero means no limit.
	Rate int
	Per  time.Duration
}

// Limited reports whether the policy limits the flow's starts: a
// Concurrency or a Rate.
func (p Policy) Limited() bool { return p.Concurrency > 0 || p.Rate > 0 }

// Bounds of a Rate's period: a millisecond is the clock of the backends,
// and a day bounds what a backend keeps to count the starts.
const (
	MinRatePeriod = time.Millisecond
	MaxRatePeriod = 24 * time.Hour
)

// Timeout sets the flow's time limit for one run (Policy.Timeout). It
// must be positive.
func Timeout(d time.Duration) Option {
	return func(i *Info) {
		if d <= 0 {
			i.invalid(fmt.Sprintf("Timeout %s must be positive", d))
		}
		i.Policy.Timeout = d
	}
}

// MaxAttempts sets the number of runs a task of the flow gets
// (Policy.MaxAttempts). It must be at least 1.
func MaxAttempts(n int) Option {
	return func(i *Info) {
		if n < 1 {
			i.invalid(fmt.Sprintf("MaxAttempts %d must be at least 1", n))
		}
		i.Policy.MaxAttempts = n
	}
}

// Backoff sets the delay before a failed task's next attempt
// (Policy.Backoff); its argument is the attempt that failed. It must not
// be nil.
func Backoff(f func(attempt int) time.Duration) Option {
	return func(i *Info) {
		if f == nil {
			i.invalid("Backoff is nil")
		}
		i.Policy.Backoff = f
	}
}

// Concurrency limits the flow to n tasks running at once across every
// worker of a queue (Policy.Concurrency): the others stay PENDING, with a
// status line that says what they wait for, and use none of their
// attempts while they wait. n must be at least 1. See the README, Limits.
func Concurrency(n int) Option {
	return func(i *Info) {
		if n < 1 {
			i.invalid(fmt.Sprintf("Concurrency %d must be at least 1", n))
		}
		i.Policy.Concurrency = n
	}
}

// Rate limits the flow to n starts within any period per, across every
// worker of a queue (Policy.Rate and Per), for a provider's quota: a task
// that would pass it stays PENDING until the oldest start of the window
// is per old. A start is counted as a worker leases the task, by the
// backend's clock: tasks let through to the workers while none is free
// hold their starts until they are leased, so however long they wait,
// no window of per holds more than n starts. A task taken back from a
// dead worker keeps its first start; a retry is a start of its own. A
// provider counts by its own clock, as the flow's calls reach it: leave
// it some headroom (see the README, Limits). n must be at least 1 and
// per between MinRatePeriod and MaxRatePeriod.
func Rate(n int, per time.Duration) Option {
	return func(i *Info) {
		switch {
		case n < 1:
			i.invalid(fmt.Sprintf("Rate %d per %s: the number of starts must be at least 1", n, per))
		case per < MinRatePeriod:
			i.invalid(fmt.Sprintf("Rate %d per %s: the period must be at least %s", n, per, MinRatePeriod))
		case per > MaxRatePeriod:
			i.invalid(fmt.Sprintf("Rate %d per %s: the period must be at most %s", n, per, MaxRatePeriod))
		}
		i.Policy.Rate, i.Policy.Per = n, per
	}
}

// invalid records the first bad option value, which Register reports.
func (i *Info) invalid(msg string) {
	if i.err == nil {
		i.err = fmt.Errorf("%w: flow %q: %s", ErrInvalid, i.Name, msg)
	}
}

// Limited returns the policies of the registered flows that limit their
// starts (see Policy.Limited), by flow name: a queue.Worker keeps their
// tasks moving through the backend's limits with it.
func (r *Registry) Limited() map[string]Policy {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string]Policy{}
	for name, e := range r.flows {
		if e.Policy.Limited() {
			out[name] = e.Policy
		}
	}
	return out
}

// Unlimited returns the names of the registered flows that do not limit
// their starts (see Policy.Limited), internal ones included, sorted: a
// queue.Worker lets through the tasks of theirs that still wait behind
// limits the flows had before (see the README, Limits).
func (r *Registry) Unlimited() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for name, e := range r.flows {
		if !e.Policy.Limited() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
