package queue

import (
	"context"
	"os"
	"sync"
	"time"
)

// beat writes the worker into its backend's registry (see WorkerRegistry)
// now and then every WorkerConfig.Heartbeat, until the returned function
// is called; that function waits for a write in progress. A backend
// without a registry is left alone. A failed write is logged and tried
// again at the next beat. Each write that succeeds renews the worker's
// liveness, and each one sent tells it that the worker keeps trying (see
// liveness).
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
		for {
			info.Running = int(w.holding.Load())
			opCtx, opCancel := context.WithTimeout(ctx, min(opTimeout, w.cfg.Heartbeat))
			sent := time.Now()
			w.live.trying(sent)
			if err := reg.Heartbeat(opCtx, info); err == nil {
				w.live.confirm(sent)
			} else if ctx.Err() == nil {
				w.log.Warn("flows: writing the worker's heartbeat failed", "err", err)
			}
			opCancel()
			select {
			case <-t.C:
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
