package redisbackend

import (
	"cmp"
	"strconv"

	"github.com/flowsrun/flows/queue"
)

// Recovery in seconds. Besides the last-seen set of the registry (see
// workers.go), each heartbeat writes the worker into the deadlines set of
// the queue, scored by the server's clock plus the time the worker may go
// without a heartbeat (queue.WorkerInfo.DeadAfter: MissedBeats of its
// intervals). The same script then looks at the first member of that set
// (one command when no worker is dead): a worker whose deadline has
// passed is dead, and the leases its consumer holds in the group's
// pending list are marked lost at once, without waiting out their
// deadline (see lua/lib/reclaim.lua): the token of each one's lease in
// the leases set is replaced by one whose holder is "lost/" and the
// lease's number, so that the dead worker's token no longer matches in
// any lease script (extend, ack, retry, finish, bury), scored by now, so
// that the next fetch takes them over and tells the next attempt that
// the worker was lost (queue.EndWorkerLost). The waiting fetchers are
// woken through the wake stream. The pending list names the dead
// worker's entries, not their leases' numbers: the first heartbeat that
// finds a dead worker holding entries reads the whole leases set once,
// a cost that grows with the leases held, paid when a worker dies.
//
// A worker judges others only once its heartbeats have come without a
// gap for a whole DeadAfter of its own: the contact set holds, for each
// worker, when its first heartbeat came, or its first after a gap of
// more than half its DeadAfter since the one before (one and a half
// intervals: a heartbeat did not get through). After a Redis restart or
// a network split, the first worker back would otherwise take over the
// tasks of every worker whose heartbeat came back later than its own
// second one; now each has a whole window after the outage to beat
// again, and hands back what it stopped without spending an attempt
// (queue.EndBackendDown). A new worker, too, waits a window before it
// judges: a killed worker's tasks wait longer than its own window only
// when every other worker came into contact after its last heartbeat,
// and then for at most one window more.
//
// Every key lives under the queue's hash tag, so the script runs on one
// node of a Redis Cluster. The clock is the Redis server's throughout:
// the deadline is set and compared by scripts on the same server, so the
// workers' clocks never meet. A worker that merely paused (a long GC, a
// SIGSTOP) past its deadline finds, when it resumes, that its lease is
// lost on its next lease script; queue.Worker also stops such a run on
// its own clock before the deadline can pass (see queue/liveness.go).
//
// An entry pending with no lease (a fetch script that failed after it
// had read the entry, which Redis does not undo) is taken back by a
// sweep, which the heartbeat script of each process runs once per
// sweepEvery, and which works once per sweepEvery per queue (the first
// to come sets the swept key, and the others find it): it marks the
// entry lost as a dead worker's lease is, whatever the state of the
// worker it was delivered to, once it has been pending for longer than
// the beating worker's lease (see lua/lib/stray.lua). An entry that has
// a token in the leases set is never touched: its lease is held, or
// passes. A sweep that works first counts: every pending entry has one
// token at most, so when the group's pending count (XPENDING's summary)
// is no more than the tokens (ZCARD of both leases sets), which is the
// rule, none lacks one, or one hidden by a token whose entry is gone
// (which lasts until that lease ends or passes), and the sweep stops
// there, at a cost that does not grow with the leases. Only when more
// are pending does it scan the pending list and read the whole leases
// set. A sweep that fails (a key of the wrong type) is logged, and does
// not fail the heartbeat that carries it.
//
// The cost is one script per heartbeat interval per worker, whatever the
// number of tasks it runs (the contact set adds a ZSCORE to it, and a
// ZADD after a gap, and the leases of the layout before 2026-12-07 a
// ZRANGEBYSCORE, see lua/lib/legacy.lua); taking over a task of a dead
// worker costs the fetch what taking over an expired lease does.

// reclaimLimit bounds the entries one heartbeat takes back from one dead
// worker, and those a sweep takes back (reading the pending list in pages
// of as many); the rest go at the next heartbeat, or sweep.
const reclaimLimit = 1000

// heartbeatCall returns the KEYS and ARGV of heartbeatScript for worker w,
// whose JSON is info; with sweep, the script also takes back the entries
// pending with no lease for longer than w's lease, unless another sweep
// did within a sweep's period.
func (b *Backend) heartbeatCall(w queue.WorkerInfo, info string, sweep bool) (keys, args []string) {
	q := b.qkeys
	keys = []string{q.workers, q.seen, q.deadlines, q.stream, q.leases, q.wake, q.contact, q.oldLeases, q.oldHolders, q.swept}
	idle, every := "", ""
	if sweep {
		idle = strconv.FormatInt(cmp.Or(max(w.Lease, 0), queue.DefaultLease).Milliseconds(), 10)
		every = strconv.FormatInt(max(b.sweep.period().Milliseconds(), 1), 10)
	}
	args = []string{w.Name, info, strconv.FormatInt(w.DeadAfter().Milliseconds(), 10), group, strconv.Itoa(reclaimLimit), idle, every}
	return keys, args
}
