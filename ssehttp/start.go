package ssehttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/strictjson"
	"github.com/flowsrun/flows/internal/telemetry"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// startResponse is the answer of a successful start-task.
type startResponse struct {
	TaskID string `json:"task_id"`
}

// startTask serves POST /start-task/.
//
// Checks, in order: cross-origin (403), the caller (401), the
// Idempotency-Key header (400), the content type (415), the body size
// (413), the JSON (400), the flow name (400),
// the authorizer (403), the flow (404 when no such flow is registered),
// then the queue, which checks the inputs (422: not an object, or failing
// the flow's schema; see Queue), may refuse the caller for its limits
// (429, see queue.BrokerConfig.CallerLimits) and may be unavailable (503).
// The task is owned by the caller.
//
// With an Idempotency-Key, the queue is asked for an idempotent enqueue
// (queue.EnqueueOptions.IdempotencyKey), scoped by the caller's
// Principal.ID: a repeat with the same flow and inputs answers 200 with
// the first task's id, and the same key with another flow or other inputs
// answers 422 (queue.ErrIdempotencyConflict), as the IETF draft
// "The Idempotency-Key HTTP Header Field" advises.
func (h *Handler) startTask(w http.ResponseWriter, r *http.Request) {
	ctx, span := h.tel.startSpan(r)
	if span.IsRecording() {
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		defer sw.end(span)
	} else {
		defer span.End()
	}
	if !h.sameOrigin(w, r) {
		return
	}
	p, ok := h.identify(w, r)
	if !ok {
		return
	}
	key, msg := idempotencyKey(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if !isJSON(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		// Refused from its headers: the client is neither asked for the
		// body (100 Continue) nor waited for.
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			writeError(w, http.StatusRequestTimeout, "request body not received in time")
			return
		}
		writeError(w, http.StatusBadRequest, "could not read request body")
		return
	}
	name, inputs, msg := parseStart(body)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if !h.authorize(w, r, Access{Action: ActionStart, Principal: p, Flow: name}) {
		return
	}
	entry, err := h.cfg.Registry.Lookup(name)
	if err == nil && entry.Internal {
		// Only the host's code starts it (registry.Internal): to a
		// client it does not exist.
		err = fmt.Errorf("%w: %q", registry.ErrUnknownFlow, name)
	}
	if err != nil {
		if errors.Is(err, registry.ErrUnknownFlow) {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		h.backendError(w, r, "lookup flow", err)
		return
	}
	if span.IsRecording() {
		span.SetAttributes(telemetry.Flow.String(name))
	}
	id, err := h.cfg.Queue.Enqueue(ctx, name, inputs, queue.EnqueueOptions{Owner: p.ID, IdempotencyKey: key, Caller: h.callerName(r, p)})
	if h.callerLimited(w, err) {
		return
	}
	switch {
	case errors.Is(err, registry.ErrUnknownFlow):
		// Config.Registry holds the flow and the Queue's does not: the
		// host gave the two different registries (a BrokerConfig without
		// Registry uses registry.Default). A 404 would tell the client
		// the flow does not exist while GET /flows/ lists it.
		h.cfg.Logger.ErrorContext(ctx, "flows: the queue refuses a flow the handler's registry holds: give queue.BrokerConfig.Registry the registry of ssehttp.Config.Registry",
			"flow", name, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("internal error: the server's queue does not know flow %q (see the server's log)", name))
		return
	case errors.Is(err, flow.ErrInvalidInputs):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	case errors.Is(err, queue.ErrIdempotencyConflict):
		writeError(w, http.StatusUnprocessableEntity, "Idempotency-Key already used for another flow or other inputs")
		return
	case err != nil:
		h.backendError(w, r, "enqueue", err)
		return
	}
	if span.IsRecording() {
		span.SetAttributes(telemetry.TaskID.String(id))
	}
	writeJSON(w, http.StatusOK, startResponse{TaskID: id})
}

// isJSON reports whether a Content-Type header names application/json,
// with or without parameters.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// startRequest is the body of POST /start-task/. Flow is kept raw so that a
// non-string name is told apart from a missing one.
type startRequest struct {
	Flow   json.RawMessage `json:"flow"`
	Inputs json.RawMessage `json:"inputs"`
}

// parseStart decodes a start-task body, strictly: a JSON object whose
// "flow" is a string and whose "inputs", if present, are left to the
// flow's validation. Members with other names are ignored, for clients
// that send more than they need, but a key that is "flow" or "inputs" but
// for case is refused (encoding/json would take it for the field), as is
// a key repeated in any object of the body outside "inputs" (the inputs'
// own duplicates are the flow's to refuse, with 422). It returns the flow
// name and the raw inputs (nil when absent), or a message for a 400
// answer.
func parseStart(body []byte) (name string, inputs json.RawMessage, msg string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var req startRequest
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "" {
			return "", nil, "request body must be a JSON object"
		}
		return "", nil, "request body is not valid JSON"
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", nil, "request body has data after the JSON object"
	}
	if err := checkStartKeys(body[:dec.InputOffset()]); err != nil {
		return "", nil, err.Error()
	}
	if len(req.Flow) == 0 || bytes.Equal(req.Flow, []byte("null")) {
		return "", nil, `missing "flow"`
	}
	if err := json.Unmarshal(req.Flow, &name); err != nil {
		return "", nil, `"flow" must be a string`
	}
	if name == "" {
		return "", nil, `missing "flow"`
	}
	return name, req.Inputs, ""
}

// checkStartKeys checks the keys of obj, a start-task body that decoded
// as an object, as parseStart says.
func checkStartKeys(obj []byte) error {
	var seenFlow, seenInputs bool
	var others map[string]bool // the other keys, made for the first
	return strictjson.Members(obj, func(key, value []byte) error {
		switch k := string(key); {
		case k == "flow" && seenFlow, k == "inputs" && seenInputs, others[k]:
			return fmt.Errorf("duplicate key %q", k)
		case k == "flow":
			seenFlow = true
		case k == "inputs":
			seenInputs = true
		case strings.EqualFold(k, "flow"), strings.EqualFold(k, "inputs"):
			return fmt.Errorf("unknown key %q: keys are case-sensitive, did you mean %q?", k, strings.ToLower(k))
		default:
			if others == nil {
				others = map[string]bool{}
			}
			others[k] = true
			return strictjson.CheckMember(k, value)
		}
		return nil
	})
}
