package ssehttp

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/flowsrun/flows/queue"
)

// Action names what a request asks to do, for Config.Authorize. Each route
// has its own.
type Action string

// The actions of the API. The task actions (read, wait, watch, cancel) are
// allowed to the task's owner and to operators only (see Principal).
const (
	// ActionStart: POST /start-task/. Access.Flow is the flow asked for.
	ActionStart Action = "start"
	// ActionFlows: GET /flows/.
	ActionFlows Action = "flows"
	// ActionRead: GET /tasks/{id}/ without a wait (or with wait=0s).
	ActionRead Action = "read"
	// ActionWait: GET /tasks/{id}/ that waits for the task to end (the
	// wait parameter, longer than zero).
	ActionWait Action = "wait"
	// ActionWatch: GET /task-status/{id}/.
	ActionWatch Action = "watch"
	// ActionCancel: POST /cancel-task/{id}/.
	ActionCancel Action = "cancel"
)

// Principal is the caller of a request, as Config.Identify names it.
type Principal struct {
	// ID names the caller. A task records the ID of the caller that
	// started it as its owner (queue.Task.Owner), and only that caller
	// and operators may read, wait on, watch or cancel it; to anyone else
	// it does not exist (404). "" is the anonymous caller: its tasks have
	// no owner, and every anonymous caller may use them, as may
	// operators. queue.InternalOwner is no caller's: Identify returning
	// it refuses the request (401), so that the tasks it owns (the
	// notification tasks of package notify) are the operators' only.
	ID string
	// Operator marks a caller the host trusts with every task: it may
	// read, wait on, watch and cancel tasks it does not own, and use the
	// routes meant for operators.
	Operator bool
}

// Access is what Config.Authorize decides on: who asks to do what, to
// which flow and task.
type Access struct {
	// Action is what the request asks to do.
	Action Action
	// Principal is the caller, as Config.Identify named it.
	Principal Principal
	// Flow is the flow asked for (ActionStart) or the task's flow (the
	// task actions; "" when the queue no longer holds the task's record,
	// or is not a TaskInspector).
	Flow string
	// TaskID is the task the route names; "" for a route without one.
	TaskID string
	// Owner is the task's owner (queue.Task.Owner): "" for a route
	// without a task and for a task without an owner. For ActionList and
	// ActionCancelMany it is the owner filter, "" for none.
	Owner string
}

// openPrincipal is the caller of every request when Config.Identify is
// nil: the API is open.
var openPrincipal = Principal{Operator: true}

// identify names the caller of r with Config.Identify, and answers 401
// when it refuses. It reports whether the request may go on.
func (h *Handler) identify(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	if h.cfg.Identify == nil {
		return openPrincipal, true
	}
	p, err := h.cfg.Identify(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return Principal{}, false
	}
	if p.ID == queue.InternalOwner {
		// Its tasks are no caller's (see Principal.ID).
		writeError(w, http.StatusUnauthorized, fmt.Sprintf("caller id %q is reserved", queue.InternalOwner))
		return Principal{}, false
	}
	return p, true
}

// authorize runs Config.Authorize on a, and answers 403 when it refuses. It
// reports whether the request may go on.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, a Access) bool {
	if h.cfg.Authorize == nil {
		return true
	}
	if err := h.cfg.Authorize(r, a); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return false
	}
	return true
}

// caller identifies the caller of a route about no task and authorizes
// action for it. It reports whether the request may go on.
func (h *Handler) caller(w http.ResponseWriter, r *http.Request, action Action) bool {
	p, ok := h.identify(w, r)
	return ok && h.authorize(w, r, Access{Action: action, Principal: p})
}

// taskAccess lets the request go on with action on task id, or answers it:
// 404 for an id no task can have, 401 when Identify refuses the caller,
// 404 when the task is unknown or the caller is neither its owner nor an
// operator (the same answer, so that nobody learns that an id exists), 403
// when Authorize refuses. It returns the task as the queue read it when it
// had to be read (the owner was asked for), nil otherwise.
func (h *Handler) taskAccess(w http.ResponseWriter, r *http.Request, action Action, id string) (*queue.TaskInfo, bool) {
	_, info, ok := h.taskAccessAs(w, r, action, id)
	return info, ok
}

// taskAccessAs is taskAccess that also returns the caller.
func (h *Handler) taskAccessAs(w http.ResponseWriter, r *http.Request, action Action, id string) (Principal, *queue.TaskInfo, bool) {
	return h.taskAccessOr(w, r, action, id, h.backendError)
}

// watchRecord reads the record of task id for the access check of a
// watch (ActionWatch) when the Queue is a TaskRecordReader: the stream
// reads the task's progress itself, so the snapshot that
// TaskInspector.Task reads with the record would be read for nothing. It
// returns nil and no error for other actions, other queues, and a task
// the queue holds no record of: Task tells those apart.
func (h *Handler) watchRecord(r *http.Request, action Action, id string) (*queue.Task, error) {
	rr, ok := h.cfg.Queue.(TaskRecordReader)
	if !ok || action != ActionWatch {
		return nil, nil
	}
	t, err := rr.Record(r.Context(), id)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, nil
	}
	return t, err
}

// taskAccessOr is taskAccessAs that answers a failure to read the task's
// owner (other than an unknown task) with failed, as notFoundOr does.
func (h *Handler) taskAccessOr(w http.ResponseWriter, r *http.Request, action Action, id string, failed func(http.ResponseWriter, *http.Request, string, error)) (Principal, *queue.TaskInfo, bool) {
	if !queue.ValidID(id) {
		writeError(w, http.StatusNotFound, "task not found")
		return Principal{}, nil, false
	}
	p, ok := h.identify(w, r)
	if !ok {
		return p, nil, false
	}
	a := Access{Action: action, Principal: p, TaskID: id}
	insp, canRead := h.cfg.Queue.(TaskInspector)
	if !canRead || (p.Operator && h.cfg.Authorize == nil) {
		// Nothing to check against the task: an operator may use every
		// task, and without a TaskInspector (then Identify is nil, see
		// New) there is no owner to compare.
		return p, nil, h.authorize(w, r, a)
	}
	var info *queue.TaskInfo
	t, err := h.watchRecord(r, action, id)
	if t == nil && err == nil {
		if info, err = insp.Task(r.Context(), id); err == nil {
			t = info.Task
		}
	}
	if err != nil {
		notFoundOr(w, r, "get task", err, failed)
		return p, nil, false
	}
	if t != nil {
		a.Flow, a.Owner = t.Flow, t.Owner
	}
	if !p.Operator && (t == nil || t.Owner != p.ID) {
		// A task whose record is gone has no known owner: only operators
		// may still see it.
		writeError(w, http.StatusNotFound, "task not found")
		return p, nil, false
	}
	return p, info, h.authorize(w, r, a)
}
