package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/flowsrun/flows/progress"
)

// Notification is what one channel delivers about one finished task. It
// is the input of the notification task that delivers it, so it must
// hold everything a channel needs: a retry, or another worker after a
// crash, delivers the same notification.
type Notification struct {
	// ID identifies this delivery, the same on every retry: it is the
	// webhook-id of a webhook and the local part of an e-mail's
	// Message-ID, so that receivers can drop a repeat. It is made from
	// TaskID and Channel (see ID).
	ID string `json:"id"`
	// Channel is the name of the channel that delivers it.
	Channel string `json:"channel"`
	// TaskID is the id of the task that finished.
	TaskID string `json:"task_id"`
	// Flow is the name of the task's flow.
	Flow string `json:"flow"`
	// Owner is the task's owner (queue.Task.Owner), "" for none: the
	// "owner" of a webhook's data, so that the receiver knows whom to
	// tell. The notification task is not its: it belongs to
	// queue.InternalOwner, so that over HTTP only operators may read or
	// cancel it.
	Owner string `json:"owner,omitempty"`
	// RequeuedFrom is the id of the dead task this task was re-queued
	// from (queue.Task.RequeuedFrom), "" for a task that was not: a
	// receiver told of that task's failure ties this one's end to it.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	// State is SUCCESS or FAILURE.
	State progress.State `json:"state"`
	// Snapshot is the task's final snapshot: its status line (the reason
	// of a FAILURE), steps and final result.
	Snapshot progress.Snapshot `json:"snapshot"`
	// Attempts is the number of runs the task was given.
	Attempts int `json:"attempts"`
	// EnqueuedAt is when the task was accepted.
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	// StartedAt is when the run that ended it started; zero when unknown
	// or when it ended without running (cancelled while pending).
	StartedAt time.Time `json:"started_at,omitzero"`
	// FinishedAt is when it reached its terminal state.
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Channel delivers notifications: a webhook (NewWebhook), e-mail
// (module github.com/flowsrun/flows/notify/smtp) or anything a host
// writes. Deliver is called from the notification's task, once per
// attempt; its error decides what comes next: nil is delivered, an error
// wrapping flow.ErrPermanent is not retried (the notification task fails
// and is dead-lettered with the error as its reason), any other error is
// retried with the worker's backoff, and flow.RetryAfter sets the least
// delay. A Channel must be safe for concurrent use and must keep its
// secrets out of its errors.
type Channel interface {
	// Name is the channel's name, unique among a Notifier's channels,
	// 1-32 lowercase letters, digits, _ or -. It is part of each
	// notification's ID, so renaming a channel changes the ids it sends.
	Name() string
	// Deliver delivers n, bounded by ctx.
	Deliver(ctx context.Context, n *Notification) error
}

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ErrInvalidChannel is returned (wrapped) by New for a channel without a
// valid name, or two channels with one name.
var ErrInvalidChannel = errors.New("notify: invalid channel")

func checkChannelName(name string) error {
	if !channelName.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1-32 lowercase letters, digits, _ or -, starting with a letter or digit", ErrInvalidChannel, name)
	}
	return nil
}

// ID returns the id of the notification of task taskID on the named
// channel: "msg_<task id>_<channel>". Task ids and channel names hold no
// dot, which the webhook signature scheme needs.
func ID(taskID, channel string) string { return "msg_" + taskID + "_" + channel }

// EventType returns the event type of the notification, as a webhook's
// "type": "task.succeeded" or "task.failed".
func (n *Notification) EventType() string {
	if n.State == progress.StateSuccess {
		return "task.succeeded"
	}
	return "task.failed"
}

// Status returns the final status line: "Completed", or the reason of a
// FAILURE.
func (n *Notification) Status() string { return n.Snapshot.Details.Status }

// Result returns the final result as text: a JSON string's value, any
// other JSON as it is, "" when there is none.
func (n *Notification) Result() string {
	r := bytes.TrimSpace(n.Snapshot.Details.FinalResult)
	if len(r) == 0 || bytes.Equal(r, []byte("null")) {
		return ""
	}
	var s string
	if r[0] == '"' && json.Unmarshal(r, &s) == nil {
		return s
	}
	return string(r)
}

// Duration returns how long the last run took, from StartedAt to
// FinishedAt; zero when either is unknown.
func (n *Notification) Duration() time.Duration {
	if n.StartedAt.IsZero() || n.FinishedAt.IsZero() {
		return 0
	}
	return n.FinishedAt.Sub(n.StartedAt)
}
