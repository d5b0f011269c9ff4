package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/queue"
)

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
			info, err := broker.Task(r.Context(), id)
			switch {
			case errors.Is(err, queue.ErrNotFound):
				w.WriteHeader(http.StatusNotFound)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "task not found"})
				return
			case err != nil:
				logger.Error("notifications: read the task", "task_id", id, "err", err)
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "the backend cannot be reached"})
				return
			}
			owner := ""
			if info.Task != nil {
				owner = info.Task.Owner
			}
			if answer.Notifications, err = notifier.Status(r.Context(), id, owner); err != nil {
				logger.Error("notifications: read their tasks", "task_id", id, "err", err)
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "the backend cannot be reached"})
				return
			}
		}
		_ = json.NewEncoder(w).Encode(answer)
	})
}
