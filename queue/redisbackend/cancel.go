package redisbackend

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/queue"
)

// Cancel implements queue.Backend. It takes two round trips, since the
// task's record and the queue's keys live on different cluster slots:
// cancelScript marks the record while, in the same round trip, the id is
// published on the queue's cancel channel (a shard channel of the queue's
// slot; an id that names no task is ignored by the workers), then
// readyScript makes the task ready at once if it waits in the delayed set
// or in its flow's gate (see limit.go): its worker ends it without
// running it, and without a slot. A task that waits to run its finish
// hooks again (in the hooks set too) has ended: it waits for its time.
// Retry does the same two steps in the opposite order, so that a cancelled
// task never stays delayed for a run of its flow whatever the
// interleaving.
func (b *Backend) Cancel(ctx context.Context, id string) error {
	if !queue.ValidID(id) {
		return fmt.Errorf("%w: %w", queue.ErrNotFound, queue.ErrInvalidID)
	}
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	c := b.client
	reply, _ := b.runLeaseScript(ctx, cancelScript, []string{b.taskKey(id)}, nil,
		rueidis.Commands{c.B().Spublish().Channel(b.cancelChannel()).Message(id).Build()})
	if err := reply.Error(); err != nil {
		return b.wrap(ctx, "cancel task "+id, err)
	}
	found, err := reply.ToArray()
	if err != nil || len(found) != 2 {
		return fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	// The task may wait in its flow's gate, if its flow is limited: the
	// record names the flow (a Limit is not stored), and a gate that does
	// not hold it costs one ZREM.
	var t queue.Task
	if rec, err := found[1].ToString(); err == nil && decodeRec(rec, &t) == nil && t.Flow != "" {
		return b.makeReady(ctx, id, t.Flow)
	}
	return b.makeReady(ctx, id, "")
}

// makeReady moves a delayed task to the stream (see readyScript), unless
// it waits to run its finish hooks again, or a task of flow waiting in its
// flow's gate when flow is not "". ctx comes from bound.
func (b *Backend) makeReady(ctx context.Context, id, flow string) error {
	keys := []string{b.delayedKey(), b.streamKey(), b.hooksKey()}
	if flow != "" {
		keys = append(keys, b.gateKey(flow))
	}
	err := readyScript.exec(ctx, b.client, keys, []string{id}).Error()
	return b.wrap(ctx, "make task "+id+" ready", err)
}

// Cancellations implements queue.Backend on the backend's one pub/sub
// connection. It returns once the subscription is in place, so that every
// Cancel after it is delivered, or with an error wrapping
// queue.ErrUnavailable if that takes longer than Config.OpTimeout. Ids are
// buffered for a slow reader, never dropped; one published while the
// pub/sub connection is being replaced (see the package documentation)
// comes twice. Cancellations published while
// the pub/sub connection is down are not delivered: workers also find the
// cancelled flag in the task record, when they fetch the task and each
// time they extend its lease (Extend reports queue.ErrCancelled).
func (b *Backend) Cancellations(ctx context.Context) (<-chan string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.closed() {
		return nil, ErrClosed
	}
	channel := b.cancelChannel()
	in := newInbox()
	in.unbounded = true
	ready := b.hub.join(channel, in)
	wait, cancelWait := context.WithTimeout(ctx, b.cfg.OpTimeout)
	defer cancelWait()
	select {
	case <-ready:
	case <-b.ctx.Done():
		b.hub.leave(channel, in)
		return nil, ErrClosed
	case <-wait.Done():
		b.hub.leave(channel, in)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("redisbackend: listen for cancellations: %w: subscription not confirmed in %v", queue.ErrUnavailable, b.cfg.OpTimeout)
	}

	out := make(chan string)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(out)
		defer b.hub.leave(channel, in)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(b.ctx, cancel)()
		for {
			select {
			case <-ctx.Done():
				return
			case <-in.notify:
			}
			ids, _ := in.take()
			for _, id := range ids {
				select {
				case out <- id:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
