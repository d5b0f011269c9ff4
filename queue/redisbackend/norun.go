package redisbackend

import (
	"context"
	"strconv"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// A lease that let its task go without running its flow
// (queue.Lease.NoRun) is counted in the task hash's noruns field by
// no_run.lua, which Ack and Bury send in the round trip of the script
// that releases the lease (Retry counts it with the end it records, see
// lib/record_end.lua).

// noRunCommand returns the command that counts l in its task's NoRuns,
// and false when there is none to send (l.NoRun is not set).
func (b *Backend) noRunCommand(l *queue.Lease) (rueidis.Completed, bool) {
	if l == nil || !l.NoRun || l.Task == nil || !queue.ValidID(l.Task.ID) {
		return rueidis.Completed{}, false
	}
	keys, args := b.noRunArgs(l)
	return noRunScript.evalsha(b.client, keys, args), true
}

// noRunArgs returns the KEYS and ARGV of no_run.lua for l.
func (b *Backend) noRunArgs(l *queue.Lease) (keys, args []string) {
	return []string{b.taskKey(l.Task.ID)}, []string{strconv.Itoa(l.Task.Attempt)}
}

// noRunCounted handles the reply res of l's noRunCommand: when Redis had
// lost the script (a restart), it runs it again, whole, in a round trip
// of its own (nothing ran the first time); an error is logged: the task
// then shows one run more than its flow had.
func (b *Backend) noRunCounted(ctx context.Context, l *queue.Lease, res rueidis.RedisResult) {
	err := res.Error()
	if noScript(err) {
		keys, args := b.noRunArgs(l)
		err = b.client.Do(ctx, noRunScript.eval(b.client, keys, args)).Error()
	}
	if err != nil {
		b.log.Warn("flows: could not count a lease that did not run the flow; the task shows one run more", "task_id", l.Task.ID, "err", err)
	}
}
