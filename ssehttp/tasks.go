package ssehttp

import (
	"errors"
	"net/http"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// flows serves GET /flows/: the registered flows, sorted by name.
func (h *Handler) flows(w http.ResponseWriter, r *http.Request) {
	if !h.caller(w, r, ActionFlows) {
		return
	}
	writeJSON(w, http.StatusOK, h.cfg.Registry.List())
}

// taskResponse is the body of GET /tasks/{id}/: the snapshot, flattened,
// with what the queue knows about the task when it can tell.
type taskResponse struct {
	TaskID      string           `json:"task_id"`
	State       progress.State   `json:"state"`
	Details     progress.Details `json:"details"`
	LastEventID string           `json:"last_event_id"`
	// Flow and Attempt come from the queue's record, when the Queue is a
	// TaskInspector and still holds the task.
	Flow    string `json:"flow,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// The snapshot's times (progress.Snapshot), when set.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
}

// setSnapshot puts snap, whose last event is last, into r.
func (r *taskResponse) setSnapshot(snap progress.Snapshot, last string) {
	r.State, r.Details, r.LastEventID = snap.State, snap.Details, last
	r.UpdatedAt, r.StartedAt, r.EndedAt = snap.UpdatedAt, snap.StartedAt, snap.EndedAt
}

// task serves GET /tasks/{id}/: the task's current snapshot as JSON.
func (h *Handler) task(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info, ok := h.taskAccess(w, r, ActionRead, id)
	if !ok {
		return
	}
	resp := taskResponse{TaskID: id}
	if insp, ok := h.cfg.Queue.(TaskInspector); ok {
		if info == nil {
			var err error
			if info, err = insp.Task(r.Context(), id); err != nil {
				h.notFoundOr(w, r, "get task", err)
				return
			}
		}
		resp.setSnapshot(info.Snapshot, info.LastEventID)
		if info.Task != nil {
			resp.Flow, resp.Attempt = info.Task.Flow, info.Task.Attempt
		}
	} else {
		snap, last, err := h.cfg.Progress.Snapshot(r.Context(), id)
		if err != nil {
			h.notFoundOr(w, r, "get snapshot", err)
			return
		}
		resp.setSnapshot(snap, last)
	}
	if resp.Details.StepResults == nil {
		resp.Details.StepResults = []progress.StepResult{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// cancelResponse is the body of an accepted cancel-task.
type cancelResponse struct {
	TaskID string `json:"task_id"`
	Status string `json:"status"`
}

// cancelTask serves POST /cancel-task/{id}/. It answers 202 once the
// cancellation is asked for: a pending task ends at once, a running one when
// its flow returns, and watchers see it end FAILURE with status "Cancelled".
func (h *Handler) cancelTask(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !h.sameOrigin(w, r) {
		return
	}
	if _, ok := h.taskAccess(w, r, ActionCancel, id); !ok {
		return
	}
	err := h.cfg.Queue.Cancel(r.Context(), id)
	switch {
	case err == nil:
		writeJSON(w, http.StatusAccepted, cancelResponse{TaskID: id, Status: "cancelling"})
	case errors.Is(err, queue.ErrFinished):
		writeError(w, http.StatusConflict, "task already finished")
	default:
		h.notFoundOr(w, r, "cancel", err)
	}
}

// notFoundOr answers 404 for an unknown task, and a backend error
// otherwise.
func (h *Handler) notFoundOr(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, queue.ErrNotFound) || errors.Is(err, progress.ErrNotFound) {
		writeError(w, http.StatusNotFound, "task not found")
		return
	}
	h.backendError(w, r, what, err)
}
