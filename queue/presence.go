package queue

import (
	"context"
	"os"
	"sync"
	"time"
)

// heartbeatRetries is how many times a worker whose heartbeat failed
// tries again within an interval (see beat).
const heartbeatRetries = 4

// beat writes the worker into its backend's registry (see WorkerRegistry)
// now and then every WorkerConfig.Heartbeat, until the returned function
// is called; that function waits for a write in progress. A backend
// without a registry is left alone. A failed write is logged and tried
// again a quarter of an interval later (heartbeatRetries), and so on
// until one succeeds: a backend back from an outage shorter than the
// worker's liveness window hears from it before that window ends, even
// if the outage covered two of its beats. A write waits for its reply
// for an interval, or longer while that reply can still renew the
// liveness (see liveness.replyBy), so that a reply a loaded host reads
// late is not dropped. Each write that succeeds
// renews the worker's liveness, and each one sent tells it that the
// worker keeps trying (see liveness).
func (w *Worker) beat(base context.Context) (stop func()) {
	reg, ok := w.backend.(WorkerRegistry)
	if !ok {
		return func() {}
	}
	info := WorkerInfo{
		Name: w.cfg.Name, Host: hostname, PID: os.Getpid(), Slots: w.cfg.Concurrency,
		StartedAt: time.Now().UTC(), Heartbeat: w.cfg.Heartbeat, Lease: w.cfg.Lease,
	}
	ctx, cancel := context.WithCancel(base)
	var done sync.WaitGroup
	done.Go(func() {
		t := time.NewTicker(w.cfg.Heartbeat)
		defer t.Stop()
		var retry <-chan time.Time // set while the last write failed
		for {
			info.Running = int(w.holding.Load())
			sent := time.Now()
			opCtx, opCancel := context.WithDeadline(ctx, w.live.replyBy(sent, w.cfg.Heartbeat, opTimeout))
			w.live.trying(sent)
			err := reg.Heartbeat(opCtx, info)
			opCancel()
			switch {
			case err == nil:
				w.live.confirm(sent)
				retry = nil
			case ctx.Err() == nil:
				if retry == nil {
					w.log.Warn("flows: writing the worker's heartbeat failed; trying again", "err", err)
				}
				retry = time.After(max(w.cfg.Heartbeat/heartbeatRetries, time.Millisecond))
			}
			select {
			case <-t.C:
			case <-retry:
			case <-ctx.Done():
				return
			}
		}
	})
	return func() {
		cancel()
		done.Wait()
		w.live.stop()
	}
}
