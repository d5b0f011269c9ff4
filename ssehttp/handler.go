package ssehttp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/registry"
)

// Defaults used where a Config field is zero.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultHeartbeat    = 15 * time.Second
	DefaultRetry        = 3 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultBodyTimeout  = 10 * time.Second
	DefaultMaxWait      = 60 * time.Second
)

// Queue is what the Handler needs from the task queue: accepting and
// cancelling tasks. *queue.Broker implements it.
//
// Errors are interpreted with errors.Is: flow.ErrInvalidInputs from
// Enqueue becomes 422; queue.ErrNotFound and queue.ErrFinished from
// Cancel become 404 and 409; queue.ErrUnavailable,
// context.DeadlineExceeded and network errors become 503 on every route
// but the event stream, which answers with a "retry:" hint instead (see
// the package documentation's Event stream).
// The Handler answers 404 itself for a flow Config.Registry does not
// hold, before it calls Enqueue: registry.ErrUnknownFlow from Enqueue
// means the Queue was given another registry, and becomes 500, logged
// with what to fix.
type Queue interface {
	// Enqueue accepts a task for the named flow and returns its id. It
	// checks the inputs, as queue.Broker does with its registry
	// (queue.BrokerConfig.Registry, which should hold the flows of
	// Config.Registry): the Handler passes them on as the client sent
	// them, having checked only that the flow is in Config.Registry and
	// not internal.
	Enqueue(ctx context.Context, flow string, inputs json.RawMessage, opts queue.EnqueueOptions) (string, error)
	// Cancel asks a pending or running task to stop.
	Cancel(ctx context.Context, id string) error
}

// TaskInspector may be implemented by a Queue to add the queue's own
// record (flow name, attempt) to GET /tasks/{id}/. *queue.Broker implements
// it.
type TaskInspector interface {
	// Task returns the task with its snapshot, or an error wrapping
	// queue.ErrNotFound.
	Task(ctx context.Context, id string) (*queue.TaskInfo, error)
}

// TaskRecordReader may be implemented by a Queue that is a TaskInspector,
// to check who may watch a task (GET /task-status/{id}/) from the
// queue's record alone, without reading the task's snapshot as Task
// does: a client reconnecting to a task that has ended then costs the
// backend the same few reads whatever the task's size. *queue.Broker
// implements it. With Config.Identify set, New logs a warning for a
// Queue that is not one (a wrapper of *queue.Broker that does not
// forward Record), which works at that cost.
type TaskRecordReader interface {
	// Record returns the queue's record of the task, or an error
	// wrapping queue.ErrNotFound when the queue holds none (the task
	// may still have a snapshot: Task is then asked).
	Record(ctx context.Context, id string) (*queue.Task, error)
}

// TaskWaiter may be implemented by a Queue to answer GET /tasks/{id}/ with
// ?wait=: Wait returns the task once it has ended (see queue.Broker.Wait,
// which implements it). Without it, the Handler waits on Progress's live
// feed and answers without the queue's record.
type TaskWaiter interface {
	// Wait returns the task with its terminal snapshot once it has
	// ended, an error wrapping queue.ErrNotFound for an unknown task, or
	// ctx's error when ctx ends first.
	Wait(ctx context.Context, id string) (*queue.TaskInfo, error)
}

// Config configures a Handler. Queue and Progress are required; every
// other field has a useful zero value.
type Config struct {
	// Queue accepts and cancels tasks; usually a *queue.Broker. Required.
	Queue Queue

	// Progress is where task snapshots and events are read from: the same
	// store the workers write to. Required. Its errors that wrap
	// queue.ErrUnavailable (the Redis backend's do when Redis cannot be
	// reached) are answered with 503, as are the queue's, except when
	// they keep an event stream from opening: that answer is a stream
	// holding only a "retry:" hint (see the package documentation).
	Progress progress.Backend

	// Registry holds the flows that can be started. Nil means
	// registry.Default.
	Registry *registry.Registry

	// MaxBodyBytes limits the size of a start-task body; a larger body is
	// answered with 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// Heartbeat is how long an event stream may stay silent before a
	// comment is sent to keep it open. Zero means DefaultHeartbeat.
	Heartbeat time.Duration

	// Retry is the reconnection delay suggested to EventSource clients
	// with the stream's "retry:" line. Zero means DefaultRetry.
	Retry time.Duration

	// WriteTimeout bounds each write to an event stream, and each other
	// answer from its start (its status line): a client that does not
	// take a message or an answer within it is dropped. It replaces the
	// server's own WriteTimeout, which would otherwise cut every long
	// stream. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// BodyTimeout bounds how long a client may take to send the body of a
	// request, counted from when the handler gets the request (its
	// headers read): a start-task body still incomplete then is answered
	// with 408, and a body the route does not read (cancel-task) can hold
	// its connection no longer. The connection is closed either way. A
	// client trickling a body one byte at a time holds a connection for
	// this long at most. It needs a ResponseWriter that can set read
	// deadlines (net/http's can; a wrapper must have an Unwrap method);
	// a warning is logged once otherwise. Zero means DefaultBodyTimeout.
	BodyTimeout time.Duration

	// TrustedProxies are the addresses of the reverse proxies in front of
	// the Handler, whose X-Forwarded-For it believes when it names an
	// anonymous caller by its address (for caller limits). A request from
	// one of them is taken to come from the right-most address of
	// X-Forwarded-For that is not one of them; any other request from its
	// own address (the host of http.Request.RemoteAddr), whatever headers
	// it sends. An entry of X-Forwarded-For may carry a port, which is
	// dropped (203.0.113.7:5678, [2001:db8::1]:443, as some proxies write
	// them); an entry that is no address ends the walk, and the request is
	// taken to come from the hop to its right. An IPv4 address matches an
	// IPv4 prefix or its IPv4-mapped IPv6 form, either way it is written:
	// ::ffff:10.0.0.0/104 is 10.0.0.0/8, and a peer or hop
	// ::ffff:10.1.2.3 is 10.1.2.3. Any other IPv6 prefix (::/0 too)
	// matches IPv6 addresses only. Empty: X-Forwarded-For is never
	// believed.
	TrustedProxies []netip.Prefix

	// MaxStreamsPerCaller caps the task-status streams one caller (its
	// Principal.ID, or its address when anonymous, the /64 network of an
	// IPv6 one; see CallerName: a principal is never taken for an
	// address) holds open at once. One more is answered with 200 and an
	// event stream that holds only a comment and a "retry:" line of
	// Retry, then ends, with a Retry-After header of Retry besides: an
	// EventSource reconnects after Retry with its Last-Event-ID, where a
	// 429 would close it for good (see the package documentation, Event
	// stream). The refused request holds no place. The count is per
	// Handler, so per process: with n web processes behind a balancer a
	// caller may hold up to n times as many. Long polls are not counted.
	// Zero: no cap.
	// The start rate and the cap on waiting tasks of each caller are the
	// queue's: see queue.BrokerConfig.CallerLimits.
	MaxStreamsPerCaller int

	// MaxWait caps the long poll of GET /tasks/{id}/?wait=<duration>: a
	// longer wait asked for is cut to it. Zero means DefaultMaxWait.
	MaxWait time.Duration

	// Identify names the caller of a request (a session cookie's user, a
	// bearer token's subject): see Principal for what a task's owner and
	// an operator may do. A non-nil error refuses the request with 401 and
	// the error's text as the message (cut at 1 KiB), so it should say
	// why in words fit for the client and name no credential. Nil means that the API is
	// open: every caller is an anonymous operator, who may use every task.
	// Identify needs a Queue that is a TaskInspector (New panics
	// otherwise): the owner of a task is read from the queue's record.
	Identify func(r *http.Request) (Principal, error)

	// Inspector, when set, serves the operators' routes: GET /tasks/ (a
	// listing), GET /stats/, GET /dead/, POST /dead/{id}/requeue/ and
	// POST /cancel-tasks/ (see the package documentation); usually a
	// *queue.Inspector of the Queue's backend. Only operators
	// (Principal.Operator) may use them, each under an action of its own
	// (ActionList...) for Authorize. Nil leaves them out: they answer 404.
	Inspector Inspector

	// Authorize, when set, decides whether the caller may do what it asks
	// (see Access). It runs once the caller is identified and, on the
	// routes of a task, once the caller is known to own the task or to be
	// an operator; on start-task, once the body names the flow, before
	// the flow is looked up and its inputs checked. A non-nil error
	// refuses the request with 403 and the error's text as the message
	// (cut at 1 KiB), so it should say why in words fit for the client.
	Authorize func(r *http.Request, a Access) error

	// CrossOrigin protects the state-changing routes (start-task and
	// cancel-task) against cross-site browser requests, which get 403.
	// Same-origin browser requests, non-browser clients (no Origin or
	// Sec-Fetch-Site header) and requests from an origin listed in CORS
	// pass. Nil means http.NewCrossOriginProtection().
	CrossOrigin *http.CrossOriginProtection

	// CORS lets pages on the origins it lists use the API from another
	// origin: preflight answers, Access-Control-Allow-Origin, and a pass
	// through CrossOrigin for their state-changing requests. The zero
	// value lists none. New panics if it is invalid (see CORS.Validate).
	CORS CORS

	// Logger receives the causes of 5xx answers and stream failures. Nil
	// means slog.Default().
	Logger *slog.Logger

	// TracerProvider traces start-task: its span (flows.start_task) is the
	// parent of the span of the enqueue, and so the root of the task's
	// trace unless the request already belongs to one (the host's own
	// HTTP tracing, or a traceparent header). Nil means the global
	// provider (otel.GetTracerProvider), which does nothing unless one is
	// installed.
	TracerProvider trace.TracerProvider

	// MeterProvider receives the Handler's metric: the task-status
	// streams open (flows.sse.streams). Nil means the global provider
	// (otel.GetMeterProvider), which does nothing unless one is
	// installed.
	MeterProvider metric.MeterProvider
}

// Handler is the http.Handler of the flows API. Create it with New; it is
// safe for concurrent use.
type Handler struct {
	cfg  Config
	cors *corsPolicy
	mux  *http.ServeMux
	tel  *handlerTelemetry
	// noDeadline warns once that read deadlines cannot be set.
	noDeadline sync.Once
	// streams counts the open streams of each caller.
	streams streamSlots
}

// New returns a Handler serving the API with cfg. It panics if cfg.Queue or
// cfg.Progress is nil, or if a duration, size or cap is negative (the
// message names the field), so that a misconfigured server fails at
// start-up.
func New(cfg Config) *Handler {
	if cfg.Queue == nil {
		panic("ssehttp.New: Config.Queue is nil")
	}
	if cfg.Progress == nil {
		panic("ssehttp.New: Config.Progress is nil")
	}
	if _, ok := cfg.Queue.(TaskInspector); cfg.Identify != nil && !ok {
		panic("ssehttp.New: Config.Identify needs a Queue that is a TaskInspector, to find the owner of a task")
	}
	for _, f := range []struct {
		name, zero string
		v          int64
		d          bool // a time.Duration
	}{
		{"MaxBodyBytes", "the default", cfg.MaxBodyBytes, false},
		{"Heartbeat", "the default", int64(cfg.Heartbeat), true},
		{"Retry", "the default", int64(cfg.Retry), true},
		{"WriteTimeout", "the default", int64(cfg.WriteTimeout), true},
		{"BodyTimeout", "the default", int64(cfg.BodyTimeout), true},
		{"MaxWait", "the default", int64(cfg.MaxWait), true},
		{"MaxStreamsPerCaller", "no cap", int64(cfg.MaxStreamsPerCaller), false},
	} {
		if f.v < 0 {
			v := fmt.Sprint(f.v)
			if f.d {
				v = time.Duration(f.v).String()
			}
			panic(fmt.Sprintf("ssehttp.New: Config.%s %s is negative (zero means %s)", f.name, v, f.zero))
		}
	}
	if cfg.Registry == nil {
		cfg.Registry = registry.Default
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Retry == 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.CrossOrigin == nil {
		cfg.CrossOrigin = http.NewCrossOriginProtection()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, ok := cfg.Queue.(TaskRecordReader); cfg.Identify != nil && !ok {
		// Loud, not silent: a wrapper of *queue.Broker that does not
		// forward Record still works, at the cost of every stream.
		cfg.Logger.Warn(fmt.Sprintf("flows: the Queue, a %T, is no ssehttp.TaskRecordReader: each event stream's owner check "+
			"reads the task's whole snapshot (forward Record to the *queue.Broker it wraps to read the record alone)", cfg.Queue))
	}
	cors, err := newCORSPolicy(cfg.CORS)
	if err != nil {
		panic("ssehttp.New: " + err.Error())
	}
	cfg.TrustedProxies = unmapPrefixes(cfg.TrustedProxies)
	h := &Handler{cfg: cfg, cors: cors, mux: http.NewServeMux(), tel: newHandlerTelemetry(cfg)}
	h.route("POST", "/start-task/", h.startTask)
	h.route("GET", "/task-status/{id}/", h.taskStatus)
	h.route("GET", "/flows/", h.flows)
	h.route("GET", "/tasks/{id}/", h.task)
	h.route("POST", "/cancel-task/{id}/", h.cancelTask)
	if cfg.Inspector != nil {
		h.opsRoutes()
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	return h
}

// route registers fn for method on path (which ends with a slash) and on
// path without its slash, the CORS preflight for OPTIONS, and a JSON 405
// for the other methods.
func (h *Handler) route(method, path string, fn http.HandlerFunc) {
	bare := path[:len(path)-1]
	methods := method
	if method == http.MethodGet {
		methods = "GET, HEAD"
	}
	notAllowed := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", methods+", OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
	preflight := h.preflight(methods)
	for _, p := range []string{path + "{$}", bare} {
		h.mux.HandleFunc(method+" "+p, fn)
		h.mux.HandleFunc("OPTIONS "+p, preflight)
		h.mux.HandleFunc(p, notAllowed)
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		h.limitBody(w, r)
	}
	h.cors.annotate(w, r)
	h.mux.ServeHTTP(&deadlineWriter{ResponseWriter: w, timeout: h.cfg.WriteTimeout}, r)
}

// limitBody gives the client of r, which has a body, Config.BodyTimeout to
// send it. net/http lifts the read deadline once the body has been read to
// its end; a body left unread by the route is read (to be discarded) by
// the server after the handler returns, under the same deadline.
func (h *Handler) limitBody(w http.ResponseWriter, r *http.Request) {
	err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	if err != nil {
		h.noDeadline.Do(func() {
			h.cfg.Logger.WarnContext(r.Context(), "flows: cannot set a read deadline on request bodies, so slow bodies are not timed out "+
				"(the ResponseWriter lacks SetReadDeadline and Unwrap)", "err", err)
		})
	}
}

// sameOrigin applies the cross-origin protection and answers 403 when it
// refuses; a request from an origin listed in Config.CORS passes, as from
// a trusted origin of http.CrossOriginProtection. It reports whether the
// request may go on.
func (h *Handler) sameOrigin(w http.ResponseWriter, r *http.Request) bool {
	if h.cors.allows(r.Header.Get("Origin")) {
		return true
	}
	if err := h.cfg.CrossOrigin.Check(r); err != nil {
		h.cfg.Logger.DebugContext(r.Context(), "flows: cross-origin request refused", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return false
	}
	return true
}
