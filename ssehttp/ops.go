package ssehttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

// Inspector is what the Handler needs to serve the operators' routes:
// listing and counting tasks, the dead letters, re-queueing and
// cancelling by filter. *queue.Inspector implements it.
type Inspector interface {
	List(ctx context.Context, o queue.ListOptions) (queue.TaskPage, error)
	Stats(ctx context.Context) (queue.Stats, error)
	Dead(ctx context.Context, limit int) ([]queue.DeadTask, error)
	RequeueWith(ctx context.Context, id string, o queue.RequeueOptions) (string, error)
	CancelMatching(ctx context.Context, f queue.CancelFilter) (queue.CancelResult, error)
}

// The actions of the operators' routes (see Config.Inspector). Only
// operators (Principal.Operator) may use them; Authorize then decides with
// the action, so that a host may allow some operators some of them.
const (
	// ActionList: GET /tasks/. Access.Flow is the flow filter and
	// Access.Owner the owner filter, if any.
	ActionList Action = "list"
	// ActionStats: GET /stats/.
	ActionStats Action = "stats"
	// ActionDead: GET /dead/.
	ActionDead Action = "dead"
	// ActionRequeue: POST /dead/{id}/requeue/ (?resume=1 too). Access.TaskID
	// is the dead task.
	ActionRequeue Action = "requeue"
	// ActionCancelMany: POST /cancel-tasks/. Access.Flow is the flow
	// filter and Access.Owner the owner filter, if any.
	ActionCancelMany Action = "cancel-many"
)

// opsRoutes registers the operators' routes.
func (h *Handler) opsRoutes() {
	h.route("GET", "/tasks/", h.listTasks)
	h.route("GET", "/stats/", h.stats)
	h.route("GET", "/dead/", h.dead)
	h.route("POST", "/dead/{id}/requeue/", h.requeue)
	h.route("POST", "/cancel-tasks/", h.cancelTasks)
}

// operator identifies the caller of an operators' route and authorizes
// action for it: 401 when Identify refuses, 403 for a caller who is not
// an operator or whom Authorize refuses. It reports whether the request
// may go on.
func (h *Handler) operator(w http.ResponseWriter, r *http.Request, a Access) bool {
	p, ok := h.identify(w, r)
	if !ok {
		return false
	}
	if !p.Operator {
		writeError(w, http.StatusForbidden, "operators only")
		return false
	}
	a.Principal = p
	return h.authorize(w, r, a)
}

// query reads the parameters of an operators' route from r: the names
// allowed, each at most once. Anything else is answered with 400.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query string")
		return nil, false
	}
	for name, values := range q {
		known := false
		for _, a := range allowed {
			known = known || a == name
		}
		switch {
		case !known && len(allowed) == 0:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (this route takes none)", name))
			return nil, false
		case !known:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (want %s)", name, strings.Join(allowed, ", ")))
			return nil, false
		case len(values) > 1:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter %q given more than once", name))
			return nil, false
		}
	}
	return q, true
}

// limitParam reads the limit parameter of q, def when absent; anything
// but a decimal integer from 1 to queue.MaxListLimit is answered with 400.
func limitParam(w http.ResponseWriter, q url.Values, def int) (int, bool) {
	v, ok := q["limit"]
	if !ok {
		return def, true
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n < 1 || n > queue.MaxListLimit {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not an integer from 1 to %d", v[0], queue.MaxListLimit))
		return 0, false
	}
	return n, true
}

// timeParam reads the time parameter name of q, an RFC 3339 time (with
// or without fractional seconds), the zero time when absent; anything
// else is answered with 400.
func timeParam(w http.ResponseWriter, q url.Values, name string) (time.Time, bool) {
	v, ok := q[name]
	if !ok {
		return time.Time{}, true
	}
	at, err := time.Parse(time.RFC3339, v[0])
	if err != nil {
		hint := ""
		if strings.Contains(v[0], " ") {
			// An offset's + sent as is: a query string reads it as a
			// space.
			hint = "; a + in a URL reads as a space: write it %2B"
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s %q is not an RFC 3339 time (like 2026-12-06T05:00:00Z%s)", name, v[0], hint))
		return time.Time{}, false
	}
	return at, true
}

// filterParams reads the parameters that select tasks, shared by the
// listing and cancel-by-filter: state, flow, owner, since, until, limit
// (def when absent) and cursor, refusing any other. It answers a bad one
// with 400 and reports false.
func filterParams(w http.ResponseWriter, r *http.Request, def int) (queue.ListOptions, bool) {
	q, ok := query(w, r, "state", "flow", "owner", "since", "until", "limit", "cursor")
	if !ok {
		return queue.ListOptions{}, false
	}
	limit, ok := limitParam(w, q, def)
	if !ok {
		return queue.ListOptions{}, false
	}
	since, ok := timeParam(w, q, "since")
	if !ok {
		return queue.ListOptions{}, false
	}
	until, ok := timeParam(w, q, "until")
	if !ok {
		return queue.ListOptions{}, false
	}
	return queue.ListOptions{State: stateParam(q), Flow: q.Get("flow"), Owner: q.Get("owner"), Since: since, Until: until,
		Limit: limit, Cursor: q.Get("cursor")}, true
}

// stateParam reads the state parameter: one of the four states, in any
// case, or "".
func stateParam(q url.Values) progress.State {
	return progress.State(strings.ToUpper(q.Get("state")))
}

// queryError answers an error of the Inspector: 400 with its message for
// a query it cannot run (queue.ErrInvalidQuery), a backend error
// otherwise.
func (h *Handler) queryError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, queue.ErrInvalidQuery) {
		msg := err.Error()
		if _, rest, ok := strings.Cut(msg, queue.ErrInvalidQuery.Error()+": "); ok {
			msg = rest
		}
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	h.backendError(w, r, what, err)
}

// listTasks serves GET /tasks/?state=&flow=&owner=&since=&until=&limit=&cursor=:
// a page of tasks, newest first (see queue.ListOptions).
func (h *Handler) listTasks(w http.ResponseWriter, r *http.Request) {
	o, ok := filterParams(w, r, queue.DefaultListLimit)
	if !ok {
		return
	}
	if !h.operator(w, r, Access{Action: ActionList, Flow: o.Flow, Owner: o.Owner}) {
		return
	}
	page, err := h.cfg.Inspector.List(r.Context(), o)
	if err != nil {
		h.queryError(w, r, "list tasks", err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// stats serves GET /stats/.
func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	if !h.operator(w, r, Access{Action: ActionStats}) {
		return
	}
	st, err := h.cfg.Inspector.Stats(r.Context())
	if err != nil {
		h.backendError(w, r, "stats", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// deadResponse is the body of GET /dead/.
type deadResponse struct {
	Tasks []queue.DeadTask `json:"tasks"`
}

// dead serves GET /dead/: the dead-letter set, newest first.
func (h *Handler) dead(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "limit")
	if !ok {
		return
	}
	limit, ok := limitParam(w, q, queue.DefaultListLimit)
	if !ok {
		return
	}
	if !h.operator(w, r, Access{Action: ActionDead}) {
		return
	}
	list, err := h.cfg.Inspector.Dead(r.Context(), limit)
	if err != nil {
		h.backendError(w, r, "list dead tasks", err)
		return
	}
	if list == nil {
		list = []queue.DeadTask{}
	}
	writeJSON(w, http.StatusOK, deadResponse{Tasks: list})
}

// requeueResponse is the body of an accepted requeue.
type requeueResponse struct {
	TaskID       string `json:"task_id"`
	RequeuedFrom string `json:"requeued_from"`
	Resume       bool   `json:"resume,omitempty"`
}

// requeue serves POST /dead/{id}/requeue/?resume=: the dead task runs
// again as a new task, whose id the answer gives; with resume=1 (or
// true) the new task resumes the dead one (see queue.RequeueOptions).
func (h *Handler) requeue(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !h.sameOrigin(w, r) {
		return
	}
	q, ok := query(w, r, "resume")
	if !ok {
		return
	}
	var o queue.RequeueOptions
	switch v := q.Get("resume"); v {
	case "", "0", "false":
	case "1", "true":
		o.Resume = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("resume %q is not 1, true, 0 or false", v))
		return
	}
	if !queue.ValidID(id) {
		writeError(w, http.StatusNotFound, "task not found")
		return
	}
	if !h.operator(w, r, Access{Action: ActionRequeue, TaskID: id}) {
		return
	}
	newID, err := h.cfg.Inspector.RequeueWith(r.Context(), id, o)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, requeueResponse{TaskID: newID, RequeuedFrom: id, Resume: o.Resume})
	case errors.Is(err, queue.ErrNotDead):
		writeError(w, http.StatusConflict, "task is not in the dead-letter set")
	default:
		notFoundOr(w, r, "requeue", err, h.backendError)
	}
}

// cancelTasks serves
// POST /cancel-tasks/?state=&flow=&owner=&since=&until=&limit=&cursor=:
// every pending or running task the filter selects is asked to stop (see
// queue.CancelFilter).
func (h *Handler) cancelTasks(w http.ResponseWriter, r *http.Request) {
	if !h.sameOrigin(w, r) {
		return
	}
	o, ok := filterParams(w, r, queue.MaxListLimit)
	if !ok {
		return
	}
	f := queue.CancelFilter{State: o.State, Flow: o.Flow, Owner: o.Owner, Since: o.Since, Until: o.Until,
		Limit: o.Limit, Cursor: o.Cursor}
	if f.State == "" && f.Flow == "" && f.Owner == "" && f.Since.IsZero() && f.Until.IsZero() {
		writeError(w, http.StatusBadRequest, "name a state (PENDING or PROGRESS), a flow, an owner or a time range (since, until): cancelling every task takes one call per state")
		return
	}
	if !h.operator(w, r, Access{Action: ActionCancelMany, Flow: f.Flow, Owner: f.Owner}) {
		return
	}
	res, err := h.cfg.Inspector.CancelMatching(r.Context(), f)
	if err != nil {
		h.queryError(w, r, "cancel tasks", err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}
