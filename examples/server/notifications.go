package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/queue"
)

// notificationsRetryAfter is the Retry-After of a 503 of the route, in
// seconds: ssehttp's default Config.Retry.
const notificationsRetryAfter = "3"

// notificationsAnswer is the body of GET /notifications/{id}/.
type notificationsAnswer struct {
	// Enabled is false when the server sends no notifications.
	Enabled bool `json:"enabled"`
	// Notifications are those enqueued so far, one per channel.
	Notifications []notify.Delivery `json:"notifications"`
}

// notificationsHandler answers GET /notifications/{id}/ for the demo page:
// where the notifications of a finished task stand (queued, sending,
// retrying, sent or failed), one per channel; {"enabled": false} when
// notifier is nil; 404 for an unknown task. It is the demo's own route,
// outside ssehttp's access checks: the demo names no callers (every task
// is everyone's); a host that sets ssehttp.Config.Identify must check the
// caller against the task's owner here too.
func notificationsHandler(broker *queue.Broker, notifier *notify.Notifier, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		answer := notificationsAnswer{Notifications: []notify.Delivery{}}
		if notifier != nil {
			answer.Enabled = true
			id := r.PathValue("id")
			_, err := broker.Task(r.Context(), id)
			switch {
			case errors.Is(err, queue.ErrNotFound):
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "task not found"})
				return
			case err != nil:
				notificationsFailed(w, logger, "read the task", id, err)
				return
			}
			if answer.Notifications, err = notifier.Status(r.Context(), id); err != nil {
				notificationsFailed(w, logger, "read their tasks", id, err)
				return
			}
		}
		_ = json.NewEncoder(w).Encode(answer)
	})
}

// notificationsFailed answers a failure to read task id's notifications
// as ssehttp answers its routes': 503 with a Retry-After, logged as a
// warning, while the backend is unavailable (queue.ErrUnavailable); 500,
// logged as an error, otherwise. The cause is logged without the
// credentials it may quote, never sent.
func notificationsFailed(w http.ResponseWriter, logger *slog.Logger, what, id string, err error) {
	if errors.Is(err, queue.ErrUnavailable) {
		logger.Warn("notifications: backend unavailable", "op", what, "task_id", id, "err", redact.Error(err))
		w.Header().Set("Retry-After", notificationsRetryAfter)
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "the backend cannot be reached"})
		return
	}
	logger.Error("notifications: request failed", "op", what, "task_id", id, "err", redact.Error(err))
	w.WriteHeader(http.StatusInternalServerError)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "internal error"})
}
