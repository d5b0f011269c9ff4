package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Caller limits bound what one caller (EnqueueOptions.Caller: a user, or
// a client address) may enqueue: how fast it may start tasks and how many
// of its tasks may wait to start. They are not the per-flow limits of
// registry policies, which bound how many tasks of a flow run at once
// whoever started them.

// Defaults of CallerLimits, for a host that wants generous limits
// without choosing them: DefaultCallerLimits.
const (
	DefaultCallerStarts     = 600
	DefaultCallerPer        = time.Minute
	DefaultCallerMaxPending = 1000
)

// DefaultCallerLimits returns generous limits: 600 starts a minute (a
// burst of 600 at once, then 10 a second), 1,000 tasks waiting.
func DefaultCallerLimits() CallerLimits {
	return CallerLimits{Starts: DefaultCallerStarts, Per: DefaultCallerPer, MaxPending: DefaultCallerMaxPending}
}

// CallerLimits are the limits per caller of BrokerConfig.CallerLimits.
// The zero value limits nothing.
type CallerLimits struct {
	// Starts is how many tasks one caller may start per Per: a caller
	// may start Starts tasks at once, then one every Per/Starts (a
	// generic cell rate, which a token bucket of Starts tokens refilled
	// at Starts per Per also describes). Zero: no rate limit.
	Starts int
	// Per is the window of Starts. Zero means a minute; under a
	// millisecond is refused (see Validate).
	Per time.Duration
	// MaxPending caps the caller's tasks waiting to start: enqueued,
	// never leased by a worker, not cancelled. A task stops counting as
	// soon as a worker leases it. Zero: no cap.
	MaxPending int
}

// On reports whether l limits anything.
func (l CallerLimits) On() bool { return l.Starts > 0 || l.MaxPending > 0 }

// Validate reports a negative field, and a Per under a millisecond (the
// Redis backend counts the rate in milliseconds, and would limit nothing),
// naming the field.
func (l CallerLimits) Validate() error {
	switch {
	case l.Starts < 0:
		return fmt.Errorf("queue: caller limits: Starts %d is negative (zero: no rate limit)", l.Starts)
	case l.Per < 0:
		return fmt.Errorf("queue: caller limits: Per %v is negative (zero means a minute)", l.Per)
	case l.Per > 0 && l.Per < time.Millisecond:
		return fmt.Errorf("queue: caller limits: Per %v is under a millisecond", l.Per)
	case l.MaxPending < 0:
		return fmt.Errorf("queue: caller limits: MaxPending %d is negative (zero: no cap)", l.MaxPending)
	}
	return nil
}

// withDefaults fills in Per.
func (l CallerLimits) withDefaults() CallerLimits {
	if l.Per <= 0 {
		l.Per = DefaultCallerPer
	}
	return l
}

// ErrCallerLimit: Enqueue refused a task because its caller
// (EnqueueOptions.Caller) is over one of BrokerConfig.CallerLimits.
// Nothing was enqueued. The error is a *CallerLimitError, which says
// which limit and when to try again. ssehttp answers it with 429.
var ErrCallerLimit = errors.New("queue: caller over its limit")

// The limits a CallerLimitError names.
const (
	LimitStarts  = "starts"
	LimitPending = "pending"
)

// CallerLimitError is the error of an Enqueue refused by a caller limit.
// It wraps ErrCallerLimit.
type CallerLimitError struct {
	// Limit is LimitStarts (the rate) or LimitPending (the cap on tasks
	// waiting).
	Limit string
	// RetryAfter is when a start may pass again: exact for the rate,
	// zero for the pending cap (it depends on the workers).
	RetryAfter time.Duration
}

// Error implements error.
func (e *CallerLimitError) Error() string {
	if e.Limit == LimitPending {
		return "too many tasks waiting to start; try again once some have started"
	}
	return fmt.Sprintf("too many tasks started; try again in %v", e.RetryAfter.Round(time.Millisecond))
}

// Unwrap returns ErrCallerLimit.
func (e *CallerLimitError) Unwrap() error { return ErrCallerLimit }

// callerAdmitter is implemented by a Backend that enforces caller limits
// (both backends of this module do). Like the one-step interfaces (see
// onestep.go), it is a contract between this package and its backends.
type callerAdmitter interface {
	// AdmitCaller counts one start of caller, for the task id, against
	// lim (Per filled in): it returns a *CallerLimitError, counting
	// nothing, when the start would break a limit. With lim.MaxPending,
	// it records id among the caller's waiting tasks, which the backend
	// must hold or create within a minute, or it is forgotten.
	AdmitCaller(ctx context.Context, caller string, lim CallerLimits, id string) error
}

// limitedCreator is newCreator with caller limits checked in the same
// step: see newCreator and callerAdmitter.
type limitedCreator interface {
	// CreateAndEnqueueLimited does what CreateAndEnqueueNew does, for a
	// task whose id NewID drew for this call (the implementation may
	// take it as free unchecked), once the start of caller passes lim,
	// as AdmitCaller would count it; else it returns AdmitCaller's
	// *CallerLimitError, having done nothing.
	CreateAndEnqueueLimited(ctx context.Context, t *Task, caller string, lim CallerLimits) error
}

// callerAdmitGrace is how long an id admitted but not yet stored counts
// among its caller's waiting tasks: the time a two-step enqueue takes, and
// much more.
const callerAdmitGrace = time.Minute

// limited reports whether an Enqueue with opts is subject to caller
// limits.
func (b *Broker) limited(opts EnqueueOptions) bool {
	return opts.Caller != "" && b.cfg.CallerLimits.On()
}

// admit checks the caller limits of an Enqueue of t with opts on the
// two-step path.
func (b *Broker) admit(ctx context.Context, t *Task, opts EnqueueOptions) error {
	if err := b.admitter.AdmitCaller(ctx, opts.Caller, b.cfg.CallerLimits, t.ID); err != nil {
		if errors.Is(err, ErrCallerLimit) {
			return err
		}
		return fmt.Errorf("queue: check caller limits: %w", err)
	}
	return nil
}
