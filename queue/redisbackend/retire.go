package redisbackend

import (
	"context"
	"strconv"
	"time"
)

// retireIdle is how long a consumer with no pending entry must have been
// idle for Retire to delete it although it is not the one retiring. It is
// a variable for tests only.
var retireIdle = time.Minute

// Retire implements queue.Retirer: it takes the worker out of the worker
// registry (see Heartbeat) and deletes the worker's consumer from
// the stream's consumer group unless the worker still holds an entry
// (one it could not hand back, taken over once its lease passes), and with
// it every other consumer that holds nothing and has been idle for a
// minute, left behind by workers that died. A live worker whose consumer
// is deleted gets a new one on its next Fetch, so a consumer is never
// missed. Without Retire, every worker name ever used would stay in the
// group (XINFO CONSUMERS) for good.
func (b *Backend) Retire(ctx context.Context, worker string) error {
	b.plans.forget(worker)
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	reply, res := b.runLeaseScript(ctx, retireScript, []string{b.streamKey()},
		[]string{group, worker, strconv.FormatInt(retireIdle.Milliseconds(), 10)}, b.leaveRegistry(worker))
	for _, r := range append(res, reply) {
		if err := r.Error(); err != nil {
			return b.wrap(ctx, "retire worker "+worker, err)
		}
	}
	return nil
}
