package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// DeliveryState is where one notification stands.
type DeliveryState string

// The states of a notification.
const (
	// DeliveryQueued: enqueued, not tried yet.
	DeliveryQueued DeliveryState = "queued"
	// DeliverySending: the first attempt is under way.
	DeliverySending DeliveryState = "sending"
	// DeliveryRetrying: an attempt failed; another will be made.
	DeliveryRetrying DeliveryState = "retrying"
	// DeliverySent: delivered.
	DeliverySent DeliveryState = "sent"
	// DeliveryFailed: given up; the notification task is in the
	// dead-letter set.
	DeliveryFailed DeliveryState = "failed"
)

// Delivery is the state of one notification of a task.
type Delivery struct {
	// Channel is the channel's name.
	Channel string `json:"channel"`
	// State says where it stands.
	State DeliveryState `json:"state"`
	// Attempts is the number of attempts made or under way: the runs of
	// the delivery task (queue.Task.Attempts).
	Attempts int `json:"attempts"`
	// Detail is the last error of a notification being retried, or the
	// reason of a failed one.
	Detail string `json:"detail,omitempty"`
	// NotificationTaskID is the id of the task that delivers it.
	NotificationTaskID string `json:"notification_task_id"`
}

// TaskFinder is what Status reads notification tasks through: a
// *queue.Broker.
type TaskFinder interface {
	Task(ctx context.Context, id string) (*queue.TaskInfo, error)
}

// deliveryOf reads the state of a notification from its task.
func deliveryOf(channel string, info *queue.TaskInfo) Delivery {
	d := Delivery{Channel: channel}
	if info.Task != nil {
		d.NotificationTaskID = info.Task.ID
		d.Attempts = info.Task.Attempts()
	}
	snap := info.Snapshot
	switch snap.State {
	case progress.StateSuccess:
		d.State = DeliverySent
	case progress.StateFailure:
		d.State, d.Detail = DeliveryFailed, snap.Details.Status
	case progress.StatePending:
		d.State = DeliveryQueued
	default:
		d.State = DeliverySending
		if msg, ok := lastRetry(snap); ok {
			d.State, d.Detail = DeliveryRetrying, msg
		}
	}
	return d
}

// lastRetry returns the worker's last "attempt N failed: ...; retrying"
// log line of a notification task, if there is one.
func lastRetry(snap progress.Snapshot) (string, bool) {
	steps := snap.Details.StepResults
	for i := len(steps) - 1; i >= 0; i-- {
		if m := steps[i].Message; steps[i].Type == progress.StepLog && strings.HasPrefix(m, "attempt ") && strings.Contains(m, "; retrying in ") {
			return m, true
		}
	}
	return "", false
}

// ErrNoStatus is returned by Status when Config.Queue cannot read tasks
// (it is not a TaskFinder, as a *queue.Broker is).
var ErrNoStatus = errors.New("notify: the queue cannot read notification tasks")

// Status returns where the notifications of the task taskID stand: one
// Delivery per channel whose
// notification has been enqueued, in configuration order. Channels left
// out are not enqueued (yet: the worker's finish hook has not run, or
// Filter refused them). It reads each notification task from the queue
// (Config.Queue, which must be a TaskFinder), finding it by the id its
// idempotency key gives (NotificationTaskID). A notification task
// re-queued from the dead-letter set runs under a new id that Status does
// not know: it goes on reporting the dead one, DeliveryFailed.
func (n *Notifier) Status(ctx context.Context, taskID string) ([]Delivery, error) {
	finder, ok := n.queue.(TaskFinder)
	if !ok {
		return nil, ErrNoStatus
	}
	out := []Delivery{}
	for _, name := range n.names {
		id := NotificationTaskID(ID(taskID, name))
		info, err := finder.Task(ctx, id)
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("notify: read notification %s of task %s: %w", name, taskID, err)
		}
		out = append(out, deliveryOf(name, info))
	}
	return out, nil
}
