package ssehttp

import (
	"context"
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
	// Flow, Attempt, MaxAttempts and HandBacks come from the queue's
	// record, when the Queue is a TaskInspector and still holds the task
	// (see queue.TaskSummary for what they count: Attempt is the runs of
	// the flow, queue.Task.Attempts, as in GET /tasks/).
	Flow        string `json:"flow,omitempty"`
	Attempt     int    `json:"attempt,omitempty"`
	MaxAttempts int    `json:"max_attempts,omitempty"`
	HandBacks   int    `json:"hand_backs,omitempty"`
	// RequeuedFrom and Resume, from the same record, name the dead task
	// this one was re-queued from and whether it resumes that task's
	// completed steps (queue.Task.RequeuedFrom, Resume), as GET /tasks/
	// does.
	RequeuedFrom string `json:"requeued_from,omitempty"`
	Resume       bool   `json:"resume,omitempty"`
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

// task serves GET /tasks/{id}/: the task's current snapshot as JSON. With
// ?wait=<duration> (30s, 1m...) it answers once the task has ended, or
// once the duration (at most Config.MaxWait) has passed, with the same
// JSON as without the parameter (see waitParam).
func (h *Handler) task(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wait, ok := h.waitParam(w, r)
	if !ok {
		return
	}
	action := ActionRead
	if wait > 0 {
		action = ActionWait
	}
	info, ok := h.taskAccess(w, r, action, id)
	if !ok {
		return
	}
	if wait > 0 {
		ended, err := h.waitEnd(w, r, id, wait)
		switch {
		case err == nil:
			info = ended
		case r.Context().Err() != nil:
			return // the client left
		case errors.Is(err, context.DeadlineExceeded):
			info = nil // the wait passed: the task as it is now
		default:
			notFoundOr(w, r, "wait for task", err, h.backendError)
			return
		}
	}
	if info == nil {
		var err error
		if info, err = h.taskInfo(r, id); err != nil {
			notFoundOr(w, r, "get task", err, h.backendError)
			return
		}
	}
	resp := taskResponse{TaskID: id}
	resp.setSnapshot(info.Snapshot, info.LastEventID)
	if info.Task != nil {
		resp.Flow, resp.Attempt = info.Task.Flow, info.Task.Attempts()
		resp.MaxAttempts, resp.HandBacks = info.Task.MaxAttempts, info.Task.HandBacks
		resp.RequeuedFrom, resp.Resume = info.Task.RequeuedFrom, info.Task.Resume
	}
	if resp.Details.StepResults == nil {
		resp.Details.StepResults = []progress.StepResult{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// taskInfo reads the task with its snapshot from the Queue, when it is a
// TaskInspector, or else its snapshot from Progress.
func (h *Handler) taskInfo(r *http.Request, id string) (*queue.TaskInfo, error) {
	if insp, ok := h.cfg.Queue.(TaskInspector); ok {
		return insp.Task(r.Context(), id)
	}
	snap, last, err := h.cfg.Progress.Snapshot(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return &queue.TaskInfo{Snapshot: snap, LastEventID: last}, nil
}

// waitParam reads the wait parameter of GET /tasks/{id}/: a Go duration
// (30s, 1m30s), zero when absent or empty, capped at Config.MaxWait. A
// malformed or negative one, or the parameter given more than once, is
// answered with 400, and ok is false: which of two waits the client
// meant is not for the server to guess, as for mode and lastEventId.
func (h *Handler) waitParam(w http.ResponseWriter, r *http.Request) (wait time.Duration, ok bool) {
	values := r.URL.Query()["wait"]
	if len(values) > 1 {
		writeError(w, http.StatusBadRequest, givenOnce("wait", len(values)))
		return 0, false
	}
	if len(values) == 0 || values[0] == "" {
		return 0, true
	}
	v := values[0]
	wait, err := time.ParseDuration(v)
	if err != nil || wait < 0 {
		writeError(w, http.StatusBadRequest, "wait must be a duration such as 30s, at most "+h.cfg.MaxWait.String())
		return 0, false
	}
	return min(wait, h.cfg.MaxWait), true
}

// waitEnd waits for task id to end, at most wait: through the Queue when
// it is a TaskWaiter, else on Progress's live feed. The write deadline is
// moved past the wait, so that a server's WriteTimeout shorter than it
// does not cut the answer. It returns context.DeadlineExceeded when the
// wait passed first.
func (h *Handler) waitEnd(w http.ResponseWriter, r *http.Request, id string, wait time.Duration) (*queue.TaskInfo, error) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + h.cfg.WriteTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	if waiter, ok := h.cfg.Queue.(TaskWaiter); ok {
		return waiter.Wait(ctx, id)
	}
	snap, last, err := progress.WaitFinished(ctx, h.cfg.Progress, id)
	if err != nil {
		return nil, err
	}
	return &queue.TaskInfo{Snapshot: snap, LastEventID: last}, nil
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
		notFoundOr(w, r, "cancel", err, h.backendError)
	}
}

// notFoundOr answers 404 for an unknown task, and otherwise answers err
// with failed: backendError, or streamBackendError before a stream.
func notFoundOr(w http.ResponseWriter, r *http.Request, what string, err error, failed func(http.ResponseWriter, *http.Request, string, error)) {
	if notFound(err) {
		writeError(w, http.StatusNotFound, "task not found")
		return
	}
	failed(w, r, what, err)
}

// notFound reports whether err means that the task is unknown.
func notFound(err error) bool {
	return errors.Is(err, queue.ErrNotFound) || errors.Is(err, progress.ErrNotFound)
}
