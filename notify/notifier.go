package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/libflow"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// FlowName is the name the delivery flow is registered under (see
// Notifier.Register). Tasks of this flow are never notified about: a
// notification does not beget notifications.
const FlowName = "flows.notify"

// Defaults of a Config's zero fields.
const (
	// DefaultMaxAttempts is the number of delivery attempts of one
	// notification: with the worker's default backoff (1 s doubling, with
	// jitter) the last comes about two minutes after the first.
	DefaultMaxAttempts = 8
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = time.Minute
)

// Enqueuer is where notification tasks are enqueued: a *queue.Broker.
type Enqueuer interface {
	Enqueue(ctx context.Context, flowName string, inputs json.RawMessage, opts queue.EnqueueOptions) (string, error)
}

// ErrInvalidConfig is returned (wrapped) by New for a configuration that
// cannot work.
var ErrInvalidConfig = errors.New("notify: invalid configuration")

// Config configures a Notifier.
type Config struct {
	// Channels deliver the notifications: each finished task gets one
	// notification per channel. At least one is required.
	Channels []Channel
	// Queue is where notification tasks are enqueued. Required.
	Queue Enqueuer
	// MaxAttempts is the number of delivery attempts of one
	// notification. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// Timeout bounds one delivery attempt (the notification task's time
	// limit). Zero means DefaultTimeout.
	Timeout time.Duration
	// Filter, when set, chooses the notifications to send: it is called
	// with each notification, its Channel set, before it is enqueued.
	// Nil sends them all.
	Filter func(n *Notification) bool
	// Logger receives the Notifier's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Notifier turns finished tasks into notifications. Each notification is
// a task of its own (of the flow FlowName), so it has the engine's
// promises: it is delivered at least once, survives a worker's crash, is
// retried with backoff and, when its attempts are spent, is buried in
// the dead-letter set with the last error as its reason.
//
// Wire it in three places: Register adds the delivery flow to the
// registry of every worker; Notify (or the Worker's finish hook that
// calls it) enqueues the notifications of a finished task.
type Notifier struct {
	channels map[string]Channel
	names    []string // in configuration order
	queue    Enqueuer
	cfg      Config
	log      *slog.Logger
}

// New checks cfg and returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	if cfg.Queue == nil {
		return nil, fmt.Errorf("%w: no Queue", ErrInvalidConfig)
	}
	if len(cfg.Channels) == 0 {
		return nil, fmt.Errorf("%w: no channel", ErrInvalidConfig)
	}
	if cfg.MaxAttempts < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative MaxAttempts or Timeout", ErrInvalidConfig)
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Notifier{channels: map[string]Channel{}, queue: cfg.Queue, cfg: cfg, log: cfg.Logger}
	for _, c := range cfg.Channels {
		if c == nil {
			return nil, fmt.Errorf("%w: a nil channel", ErrInvalidChannel)
		}
		name := c.Name()
		if err := checkChannelName(name); err != nil {
			return nil, err
		}
		if _, dup := n.channels[name]; dup {
			return nil, fmt.Errorf("%w: two channels are named %q", ErrInvalidChannel, name)
		}
		n.channels[name] = c
		n.names = append(n.names, name)
	}
	return n, nil
}

// Channels returns the names of the channels, in configuration order.
func (n *Notifier) Channels() []string { return append([]string(nil), n.names...) }

// Register registers the delivery flow under FlowName in reg, as an
// internal flow (registry.Internal): workers run it, clients cannot start
// it. A worker whose registry lacks it hands each notification task it
// takes back unrun, not counted, for a worker that has it (see
// queue.WorkerConfig.Registry). A worker that takes the notification of
// a channel its Notifier lacks fails the attempt with "notify: this
// worker lacks the settings of channel ..." and the notification is
// retried, so that a worker with the channel (say, a newer one in a
// rolling deploy) takes it; when none does before its attempts
// (Config.MaxAttempts) are spent, it is dead-lettered with that reason.
func (n *Notifier) Register(reg *registry.Registry) error {
	return reg.Register(FlowName, libflow.Mark(flow.Func(n.deliver)),
		registry.Internal(),
		registry.Description("Delivers a notification about a finished task"))
}

// Notify enqueues one notification task per channel (that Filter
// accepts) about the finished task that ended is a notification of: its
// ID and Channel are set here for each channel. Each is enqueued with an
// idempotency key made of its ID (queue.EnqueueOptions.IdempotencyKey),
// so that calling Notify again for the same task (a finish hook run
// twice) enqueues nothing more and returns the same ids. A notification
// task's own end is never notified about. Notification tasks are owned
// by queue.InternalOwner, not by the task's owner: over HTTP (ssehttp)
// only operators may read, cancel or re-queue them. It returns the ids of
// the notification tasks.
func (n *Notifier) Notify(ctx context.Context, ended Notification) ([]string, error) {
	if ended.Flow == FlowName {
		return nil, nil
	}
	if !ended.State.Terminal() {
		return nil, fmt.Errorf("notify: task %s is %s, not finished", ended.TaskID, ended.State)
	}
	var ids []string
	var errs []error
	for _, name := range n.names {
		nt := ended
		nt.Channel = name
		nt.ID = ID(ended.TaskID, name)
		if n.cfg.Filter != nil && !n.cfg.Filter(&nt) {
			continue
		}
		inputs, err := json.Marshal(&nt)
		if err != nil {
			errs = append(errs, fmt.Errorf("notify: encode notification %s: %w", nt.ID, err))
			continue
		}
		key := idempotencyKey(nt.ID)
		id, err := n.queue.Enqueue(ctx, FlowName, inputs, queue.EnqueueOptions{
			MaxAttempts:    n.cfg.MaxAttempts,
			Timeout:        n.cfg.Timeout,
			Owner:          queue.InternalOwner,
			IdempotencyKey: key,
		})
		if errors.Is(err, queue.ErrIdempotencyConflict) {
			// A hook that ran before (on a worker that died before
			// acknowledging the task) queued this notification, with
			// timings of its own: it stands.
			id, err = NotificationTaskID(nt.ID), nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("notify: enqueue notification %s: %w", nt.ID, err))
			continue
		}
		ids = append(ids, id)
	}
	return ids, errors.Join(errs...)
}

// Hook returns the finish hook that notifies about every task a worker
// ends: add it to queue.WorkerConfig.OnFinish. Hooks run at least once
// per task (again when a worker dies before acknowledging the task); the
// hook enqueues a notification once per task and channel all the same,
// since its enqueue is keyed by the notification's ID (see Notify). A backend
// that cannot be reached is tried again, with a short backoff, until the
// hooks' time (WorkerConfig.FinishHookTimeout) is up; then the hook
// returns the error wrapped with queue.ErrRetryHooks: the worker gives
// the task back instead of acknowledging it, and runs its hooks again
// later (up to WorkerConfig.MaxHookRetries times), so that an outage
// longer than the hooks' time loses no notification. So does a hook
// whose time ends during an enqueue (a backend that does not answer),
// whose error is then the context's rather than queue.ErrUnavailable.
func (n *Notifier) Hook() queue.FinishHook {
	return func(ctx context.Context, f queue.Finished) error {
		_, err := n.notifyWithRetry(ctx, Ended(f))
		if err != nil && (errors.Is(err, queue.ErrUnavailable) || ctx.Err() != nil) {
			return fmt.Errorf("%w: %w", queue.ErrRetryHooks, err)
		}
		return err
	}
}

// Ended returns the notification (without ID and Channel) about the task
// f tells of.
func Ended(f queue.Finished) Notification {
	return Notification{
		TaskID:       f.Task.ID,
		Flow:         f.Task.Flow,
		Owner:        f.Task.Owner,
		RequeuedFrom: f.Task.RequeuedFrom,
		State:        f.Snapshot.State,
		Snapshot:     f.Snapshot,
		Attempts:     f.Attempts(),
		EnqueuedAt:   f.Task.EnqueuedAt,
		StartedAt:    f.StartedAt,
		FinishedAt:   f.EndedAt.UTC(),
	}
}

// notifyWithRetry is Notify, tried again while the queue is unavailable
// and ctx lasts.
func (n *Notifier) notifyWithRetry(ctx context.Context, ended Notification) ([]string, error) {
	delay := 50 * time.Millisecond
	for {
		ids, err := n.Notify(ctx, ended)
		if err == nil || !errors.Is(err, queue.ErrUnavailable) {
			return ids, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ids, err
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// idempotencyKey is the idempotency key of the notification with id nid.
// Keys are scoped by owner, and the notification task belongs to
// queue.InternalOwner, which no HTTP caller can be; the key holds a NUL
// byte all the same, which is in no Idempotency-Key ssehttp accepts
// (printable ASCII only), nor in any HTTP header, so that a caller could
// not claim the key first (an HTTP Idempotency-Key naming the task it
// just started) even under the notification's owner.
func idempotencyKey(nid string) string { return "\x00flows.notify:" + nid }

// NotificationTaskID returns the id of the task that delivers the
// notification with id notificationID (see ID): the id its idempotency
// key gives, under queue.InternalOwner. Read it with the broker's Task,
// as Status does.
func NotificationTaskID(notificationID string) string {
	return queue.IdempotentID(queue.InternalOwner, idempotencyKey(notificationID))
}

// deliver is the delivery flow: it delivers the notification its task
// carries on the channel it names.
func (n *Notifier) deliver(ctx context.Context, t *flow.Task) (any, error) {
	var nt Notification
	if err := json.Unmarshal(t.Inputs, &nt); err != nil {
		return nil, flow.Permanent(fmt.Errorf("notify: the task's inputs are not a notification: %w", err))
	}
	c, ok := n.channels[nt.Channel]
	if !ok {
		// Another worker may have the channel: one of a newer release
		// in a rolling deploy that adds it. The attempt fails and the
		// notification is retried, where such a worker can take it;
		// when none ever does, its attempts run out and it is
		// dead-lettered with this error as the reason.
		return nil, fmt.Errorf("notify: this worker lacks the settings of channel %q", nt.Channel)
	}
	if err := c.Deliver(ctx, &nt); err != nil {
		return nil, err
	}
	return deliveryResult{ID: nt.ID, Channel: nt.Channel, TaskID: nt.TaskID, DeliveredAt: time.Now().UTC()}, nil
}

// deliveryResult is the final result of a delivered notification.
type deliveryResult struct {
	ID          string    `json:"id"`
	Channel     string    `json:"channel"`
	TaskID      string    `json:"task_id"`
	DeliveredAt time.Time `json:"delivered_at"`
}
