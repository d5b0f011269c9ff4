package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/flowsrun/flows/internal/failover"
)

// failoverRun is what one run of the failover scenario measured.
type failoverRun struct {
	failover.Result
}

// benchFailover kills the primary of a Redis Sentinel setup of its own
// (one primary, one replica, three sentinels) while tasks are enqueued at
// -rate and run, once without and once with durable mode, and prints the
// tasks lost and run twice and the times to recover (see package
// internal/failover). With -link-down, the replica is cut off for that
// long before the kill, as by a network partition, which is when
// asynchronous replication loses tasks.
func benchFailover(ctx context.Context, e *env, p *printer) error {
	cfg := e.cfg
	rate := cfg.Rate
	if rate == 0 {
		rate = defaultRate
	}
	for _, wait := range []int{0, 1} {
		var runs []failoverRun
		for i := range cfg.Runs {
			res, err := failover.Run(ctx, failover.Options{
				WaitReplicas: wait, Rate: rate, LinkDown: cfg.LinkDown,
				Before: max(time.Second, 2*cfg.LinkDown), After: cfg.Duration, Logger: discard,
			})
			if err != nil {
				return err
			}
			if res.DoubleEnded > 0 {
				return fmt.Errorf("%d tasks ended twice", res.DoubleEnded)
			}
			p.note("failover run %d, wait-replicas %d: %d tasks accepted, %d refused, %d lost, %d ran more than once; failover %v, accepting again %v, finishing again %v",
				i+1, wait, res.Accepted, res.Refused, len(res.Lost), res.Duplicated, res.FailedOver, res.Accepting, res.Finishing)
			for _, l := range res.LostStates {
				p.note("lost %s", strings.ReplaceAll(l.String(), "\n", "\n#   "))
			}
			runs = append(runs, failoverRun{res})
		}
		par := params("wait-replicas", wait, "rate", rate, "link-down", cfg.LinkDown, "after", cfg.Duration)
		p.figure("failover", "tasks accepted", collect(runs, func(r failoverRun) float64 { return float64(r.Accepted) }), par)
		p.figure("failover", "tasks refused", collect(runs, func(r failoverRun) float64 { return float64(r.Refused) }), par)
		p.figure("failover", "tasks lost", collect(runs, func(r failoverRun) float64 { return float64(len(r.Lost)) }), par)
		p.figure("failover", "tasks run twice", collect(runs, func(r failoverRun) float64 { return float64(r.Duplicated) }), par)
		p.figure("failover", "s to failover", collect(runs, func(r failoverRun) float64 { return r.FailedOver.Seconds() }), par)
		p.figure("failover", "s to accept again", collect(runs, func(r failoverRun) float64 { return r.Accepting.Seconds() }), par)
		p.figure("failover", "s to finish again", collect(runs, func(r failoverRun) float64 { return r.Finishing.Seconds() }), par)
	}
	return nil
}
