package redisbackend

import (
	"errors"
	"fmt"

	"github.com/redis/rueidis"
)

// Durable mode (Config.WaitReplicas): the commands that accept a task or
// end a lease, and an Append that ends a task (what a worker with finish
// hooks records before it runs them), are followed, in the same round
// trip, by WAIT, which
// answers once that many replicas have every write made so far, or when
// Config.WaitTimeout passes. rueidis sends a round trip holding a blocking
// command such as WAIT on a connection of its own; WAIT counts the writes
// of that connection, which come after all the writes they depend on.

// errNotReplicated is the cause of an enqueue that the replicas did not
// confirm in time.
var errNotReplicated = errors.New("not confirmed by the replicas in time")

// waitFor tells what durable mode does after each script that it follows
// with WAIT: accepting scripts fail when the replicas do not confirm them,
// ending scripts only log it.
var waitFor = map[*script]waitKind{
	createTaskScript: waitAccepts,
	enqueueScript:    waitAccepts,
	requeueScript:    waitAccepts,
	ackScript:        waitEnds,
	finishScript:     waitEnds,
	buryScript:       waitEnds,
	retryScript:      waitEnds,
}

// waitKind says what a script's writes are to durable mode.
type waitKind int

const (
	waitNever   waitKind = iota // not followed by WAIT
	waitAccepts                 // accepts a task: fails unless replicated
	waitEnds                    // ends a lease: logs unless replicated
)

// durable reports whether the backend waits for replicas.
func (b *Backend) durable() bool { return b.cfg.WaitReplicas > 0 }

// waitCommand returns the WAIT of durable mode.
func (b *Backend) waitCommand() rueidis.Completed {
	return b.client.B().Wait().Numreplicas(int64(b.cfg.WaitReplicas)).Timeout(b.cfg.WaitTimeout.Milliseconds()).Build()
}

// replicated checks the reply of WAIT: nil when enough replicas
// confirmed, else an error wrapping errNotReplicated (which b.wrap turns
// into one wrapping queue.ErrUnavailable too).
func (b *Backend) replicated(reply rueidis.RedisResult) error {
	n, err := reply.AsInt64()
	if err != nil {
		return fmt.Errorf("%w: wait for replicas: %w", errNotReplicated, err)
	}
	if n < int64(b.cfg.WaitReplicas) {
		return fmt.Errorf("%w: %d of %d replicas within %v", errNotReplicated, n, b.cfg.WaitReplicas, b.cfg.WaitTimeout)
	}
	return nil
}
