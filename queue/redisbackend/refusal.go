package redisbackend

import (
	"context"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/opctx"
)

// Bounds of the pause before a command a cluster refused is sent again.
const (
	refusalPauseMin = 5 * time.Millisecond
	refusalPauseMax = 200 * time.Millisecond
)

// patientClient is the client of a Backend on a Redis Cluster. It sends
// again, after a pause, each command the cluster refused without running
// it, until the command's context ends: TRYAGAIN (a script or other
// command on several keys of a slot whose keys are moving to another
// node, some already there) and CLUSTERDOWN (a failover under way).
// rueidis follows MOVED and ASK redirections itself, but retries such
// refusals only for read-only commands, and the scripts are not: sending
// them again is safe because Redis ran nothing. Once the context ends, the
// last refusal is returned, and Backend.wrap makes it an error wrapping
// queue.ErrUnavailable and progress.ErrNotSent (see refusedUnrun). BUSY
// is not sent again here: a script that holds a server up may run for
// seconds, and the callers that can wait (a worker's reporter) send the
// call again themselves.
type patientClient struct {
	rueidis.Client
}

// refused reports whether err is a refusal that ran nothing and may pass.
func refused(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && (re.IsTryAgain() || re.IsClusterDown())
}

// pause waits before attempt n+1 (from 0), or returns false when ctx ends
// first.
func pause(ctx context.Context, n int) bool {
	return opctx.Sleep(ctx, min(refusalPauseMin<<min(n, 6), refusalPauseMax))
}

// Do implements rueidis.Client.
func (c patientClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return patientDo(ctx, c.Client, cmd)
}

// DoMulti implements rueidis.Client (see patientDoMulti).
func (c patientClient) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	return patientDoMulti(ctx, c.Client, multi...)
}

// patientDedicated is a dedicated connection as patient as a
// patientClient (see beatLine).
type patientDedicated struct {
	rueidis.DedicatedClient
}

// Do implements rueidis.DedicatedClient.
func (c patientDedicated) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	return patientDo(ctx, c.DedicatedClient, cmd)
}

// DoMulti implements rueidis.DedicatedClient.
func (c patientDedicated) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	return patientDoMulti(ctx, c.DedicatedClient, multi...)
}

// patientDo sends cmd on c, and again while Redis refuses it (see
// patientClient).
func patientDo(ctx context.Context, c rueidis.CommandClient, cmd rueidis.Completed) rueidis.RedisResult {
	cmd = cmd.Pin() // rueidis recycles a command once it has an answer
	for n := 0; ; n++ {
		res := c.Do(ctx, cmd)
		if !refused(res.Error()) || !pause(ctx, n) {
			return res
		}
	}
}

// patientDoMulti sends multi on c; the refused commands are sent again,
// in their order. A transaction (MULTI ... EXEC) is sent again whole when
// Redis discarded it because a command in it was refused.
func patientDoMulti(ctx context.Context, c rueidis.CommandClient, multi ...rueidis.Completed) []rueidis.RedisResult {
	for i := range multi {
		multi[i] = multi[i].Pin()
	}
	res := c.DoMulti(ctx, multi...)
	for n := 0; ; n++ {
		var again []int
		tx := false
		for i, r := range res {
			if isMulti(multi[i]) {
				tx = true
			}
			if refused(r.Error()) {
				again = append(again, i)
			}
		}
		if len(again) == 0 || !pause(ctx, n) {
			return res
		}
		if tx {
			res = c.DoMulti(ctx, multi...)
			continue
		}
		cmds := make(rueidis.Commands, len(again))
		for k, i := range again {
			cmds[k] = multi[i]
		}
		for k, r := range c.DoMulti(ctx, cmds...) {
			res[again[k]] = r
		}
	}
}

// isMulti reports whether cmd is MULTI.
func isMulti(cmd rueidis.Completed) bool {
	words := cmd.Commands()
	return len(words) == 1 && words[0] == "MULTI"
}
