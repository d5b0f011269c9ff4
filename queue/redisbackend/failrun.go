package redisbackend

import (
	"context"
	"log/slog"
	"time"
)

// failWarnEvery bounds how often a failRun warns while it goes on.
const failWarnEvery = time.Minute

// failRun is a run of failures in a row of something the hub tries again
// after a backoff, until it works: a link's reconnection (see link.run),
// the replacement of a link's connection (see link.replace), a read of a
// Cluster's slots (see hub.router). What makes them fail lasts as a rule:
// Redis down, or refusing new connections (maxclients reached; rueidis
// may report that as EOF) or the client's credentials (an ACL changed).
// So that a long outage does not flood the log, the first failure of a
// run is a warning, and so is one every failWarnEvery while the run goes
// on; the others are debug lines. The try that works ends the run with an
// info line. The zero value is no run.
type failRun struct {
	failures int       // in a row
	since    time.Time // of the first
	warnedAt time.Time // of the last one logged as a warning
}

// fail counts a failure and logs msg with args, and the run's failures
// so far and for how long, at the level the run calls for.
func (r *failRun) fail(log *slog.Logger, msg string, args ...any) {
	now := time.Now()
	if r.failures == 0 {
		r.since = now
	}
	r.failures++
	level := slog.LevelDebug
	if r.failures == 1 || now.Sub(r.warnedAt) >= failWarnEvery {
		level, r.warnedAt = slog.LevelWarn, now
	}
	log.Log(context.Background(), level, msg, append(args, r.attrs(now)...)...)
}

// end ends the run, if there is one: it logs msg with args, and the
// run's failures and for how long, at info.
func (r *failRun) end(log *slog.Logger, msg string, args ...any) {
	if r.failures == 0 {
		return
	}
	log.Info(msg, append(args, r.attrs(time.Now())...)...)
	*r = failRun{}
}

// attrs returns the run's failures and its length at now, as log
// arguments.
func (r *failRun) attrs(now time.Time) []any {
	return []any{"failures", r.failures, "failing_for", now.Sub(r.since).Round(time.Second)}
}
