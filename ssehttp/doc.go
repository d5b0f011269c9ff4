// Package ssehttp serves the HTTP API of flows: starting tasks, watching
// them live over Server-Sent Events, listing flows, reading and cancelling
// tasks. It keeps the wire contract of the original platform, so that its
// vanilla-JS client works unchanged.
//
// The Handler is mounted by the host application on any prefix, with the
// registry its broker checks flows against:
//
//	h := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg})
//	mux.Handle("/api/", http.StripPrefix("/api", h))
//
// Routes, relative to the mount point:
//
//	POST /start-task/           {"flow": "name", "inputs": {...}} -> 200 {"task_id": "..."}
//	GET  /task-status/{id}/     text/event-stream of the task's snapshots (?mode=updates: of what changed)
//	GET  /flows/                200 [{"name", "description", "input_schema", "labels"}, ...]
//	GET  /tasks/{id}/           200 {"task_id", "state", "details", "last_event_id", ...}
//	GET  /tasks/{id}/?wait=30s  the same, once the task has ended or 30 s have passed
//	POST /cancel-task/{id}/     202 {"task_id": "...", "status": "cancelling"}
//
// With Config.Inspector set, the operators' routes too (see Operators):
//
//	GET  /tasks/?state=&flow=&owner=&since=&until=&limit=&cursor=   200 {"tasks": [...], "next_cursor": "..."}
//	GET  /stats/                               200 {"counts", "flows", "ready", "workers", "last_minute", ...}
//	GET  /dead/?limit=                         200 {"tasks": [{"task_id", "flow", "reason", "attempts", "buried_at"}]}
//	POST /dead/{id}/requeue/?resume=1          200 {"task_id": "<new id>", "requeued_from": "<id>", "resume": true}
//	POST /cancel-tasks/?state=&flow=&owner=&since=&until=&limit=&cursor=   202 {"cancelled": ["<id>", ...], "more": false, "next": "..."}
//
// Each route also answers without its trailing slash (no redirect, so it
// works under any prefix), and OPTIONS, for the preflight requests of
// pages on other origins (see Cross-origin use).
//
// # Idempotent start
//
// A start-task with an Idempotency-Key header is safe to repeat: the same
// key, flow and inputs answer 200 with the id of the task the first
// request started, while the backend retains it, and start nothing; the
// same key with another flow or other inputs answers 422. Keys are scoped
// by the caller (Principal.ID). See queue.EnqueueOptions.IdempotencyKey.
//
// # Long poll
//
// GET /tasks/{id}/?wait=<duration> (a Go duration: 30s, 1m30s) is for
// clients that cannot hold an event stream: it answers as soon as the task
// ends, from the progress store's live feed (through Queue.Wait when the
// Queue is a TaskWaiter, as *queue.Broker is), or once the wait has passed,
// with the task as it is then; the JSON is the same as without the
// parameter, so a client checks "state" to know which. Config.MaxWait (60
// s by default) caps the wait; a wait that is not a duration, or is
// negative, or the parameter given more than once (?wait=5s&wait=10m:
// which one the client meant is not for the server to guess), is
// answered with 400. A client that hangs up frees everything its wait
// held.
//
// # Errors
//
// Every error is a JSON body {"error": "message"} with Content-Type
// application/json. The message says what is wrong with the request; the
// causes of 5xx answers are logged, never sent. It quotes at most 64
// bytes of what it refuses (a flow name, a key, a parameter), followed by
// "...", and is never longer than 1 KiB (an Identify or Authorize error
// longer than that is cut), so that no input is echoed whole. Statuses:
//
//	400  start-task body that is not one JSON object, or without a "flow" string;
//	     a wait parameter that is not a non-negative duration, or is
//	     given twice;
//	     a key repeated in one object of the body outside "inputs"; a key
//	     that is "flow" or "inputs" but for case; a Last-Event-ID the
//	     progress store cannot parse, a Last-Event-ID header given
//	     twice, or a lastEventId or mode query parameter given twice; on
//	     the operators' routes, an unknown
//	     or repeated parameter, an unknown state, a limit that is not an
//	     integer from 1 to 1000, a cursor of no shape a listing issues
//	     (a made-up position is a position: the page after it; one past
//	     the year 9999, or an earlier version's cursor into the history,
//	     is refused), a malformed since or until, until before since, a cancel-tasks
//	     without a state, a flow, an owner or a time range; an Idempotency-Key that
//	     is empty, over 255 bytes, not printable ASCII or given twice
//	401  a caller Config.Identify refuses
//	403  a cross-site browser request to start-task, cancel-task or an
//	     operators' POST from an origin not listed in Config.CORS, or a
//	     request refused by Config.Authorize; an operators' route asked by a
//	     caller who is not an operator; a preflight (OPTIONS) from an
//	     origin not listed
//	404  unknown flow, unknown or invalid task id, a task the caller may
//	     not see (see Owned tasks), unknown path
//	405  wrong method for the route
//	408  a start-task body not received within Config.BodyTimeout
//	409  cancel-task of a task that has already finished; requeue of a task
//	     that is not in the dead-letter set
//	413  start-task body over Config.MaxBodyBytes (a Content-Length over it
//	     is refused before the body is read)
//	415  start-task without Content-Type application/json
//	422  "inputs" that are not a JSON object or fail the flow's schema (a
//	     key repeated in one object of the inputs is refused for every
//	     flow, see flow.Validate); an Idempotency-Key used before for
//	     another flow or other inputs
//	429  a start-task of a caller over its start rate or its cap on
//	     waiting tasks (queue.BrokerConfig.CallerLimits); with a
//	     Retry-After header. A stream over the caller's cap on open
//	     streams (Config.MaxStreamsPerCaller) answers 200 instead (see
//	     Event stream)
//	500  anything else (a generic message)
//	503  the queue or the store cannot be reached in time (an error wrapping
//	     queue.ErrUnavailable, a deadline or a network error), on every
//	     route but the event stream, with a Retry-After header; the long
//	     poll (?wait=) included. The event stream answers 200 instead (see
//	     Event stream)
//
// # Owned tasks
//
// Config.Identify names the caller of each request (a Principal). A task
// belongs to the caller that started it: its ID is stored as the task's
// owner (queue.Task.Owner). Reading, waiting on, watching and cancelling
// a task are allowed to its owner and to operators (Principal.Operator);
// anyone else gets the same 404 as for an id no task has, so that nobody
// learns which ids exist. The tasks of queue.InternalOwner (the
// notifications of package notify) are no caller's: Identify naming a
// caller so is answered 401, and only operators reach them.
// Config.Authorize then sees every request as an
// Access (action, caller, flow, task and owner) and may refuse it with
// 403. Without Identify the API is open: every caller is an anonymous
// operator.
//
// # Operators
//
// The operators' routes look at the whole queue, so they are for
// operators only: a caller who is not one (Principal.Operator false) gets
// 403, whatever the tasks it owns; it follows its own tasks by id. Each
// route has its own action for Authorize (ActionList, ActionStats,
// ActionDead, ActionRequeue, ActionCancelMany), distinct from those of
// the task routes, so that a host may allow an operator to look but not
// to act. Without Identify every caller is an operator, as for the other
// routes: give a handler with an Inspector an Identify that says who is.
//
// GET /tasks/ lists tasks newest first (by the time each entered its
// current state), filtered by state (PENDING, PROGRESS, SUCCESS, FAILURE;
// any case), flow, owner (exactly) and time: since and until are RFC 3339
// times and keep the tasks that entered their state (a finished task:
// ended) at or after since and before until. It lists limit tasks at a
// time (1 to 1000, 50 by default); pass the next_cursor of a page as
// cursor for the next, with the same filters, which has none after the
// last. A page filtered by owner may hold fewer tasks than limit, even
// none, and still have a next_cursor (a Redis queue has no index by
// owner). A malformed time, or until before since, is answered 400.
// Authorize sees the flow and owner filters in Access. Each task is {"task_id", "flow", "state", "progress",
// "status", "attempt", "max_attempts", "hand_backs", "owner",
// "requeued_from", "resume", "cancelled", "enqueued_at", "started_at", "ended_at"}
// (see queue.TaskSummary). POST /cancel-tasks/ asks every pending and running
// task that its state, flow, owner and time range select (at least one of
// them, with the listing's meaning) to stop, up to limit (1000) per call,
// and says whether more are left: then pass its next as cursor, with the
// same filters, to go on where it stopped. By owner, on a Redis queue, a
// call reads a bounded number of tasks, so it may cancel none and still
// have more. The tasks it finds asked to stop before (still running) are
// not asked again: they are listed in "already_cancelled", not in
// "cancelled". Authorize sees the flow and owner filters in Access. The
// queue package's Inspector documents the rest.
//
// POST /dead/{id}/requeue/ runs a dead task again as a new task; with
// ?resume=1 (or true) the new task resumes it: it replays the steps the
// dead task completed instead of paying for them again (see
// queue.RequeueOptions.Resume), and the answer has "resume": true.
//
// Package [github.com/flowsrun/flows/ssehttp/opspage] serves a web page
// for operators on these routes: stats with live charts, the listing, a
// task's live stream, cancel and requeue.
//
// # Event stream
//
// GET /task-status/{id}/ answers 404 (as a JSON error, before any stream
// starts) for a task it does not know. Otherwise it streams:
//
//   - a "retry:" line first, the reconnection delay hint (Config.Retry);
//   - for every event of the task, in order, a message with the event's id.
//     Default messages (no "event:" field, so EventSource.onmessage sees
//     them) carry the task's full snapshot as JSON:
//     {"state": "...", "details": {"status", "progress", "step_results", "final_result"}},
//     and its times, which old clients ignore: "updated_at", "started_at"
//     and "ended_at" (once set), and "at" on each step result.
//     Language-model tokens travel as named messages, "event: token" with
//     data {"token": "..."}, which old clients ignore;
//   - a comment line ": ping" every Config.Heartbeat while nothing happens,
//     which keeps proxies from closing an idle stream.
//
// The stream ends after the terminal snapshot (SUCCESS or FAILURE). A watch
// that starts before the task has any event first gets the PENDING snapshot
// with an empty id.
//
// A client that reconnects sends the id of the last message it saw, in the
// Last-Event-ID header or, for clients that cannot set headers, the
// lastEventId query parameter (the header wins when both are present,
// and the parameter is then not read; the header given twice, or the
// parameter given twice without the header, is refused with 400). It
// then gets every later event exactly once, each message still carrying the
// full snapshot. An id the progress store cannot parse is refused with 400;
// a well-formed id that the task never issued restarts the stream from the
// first event. A client that resumes after the terminal event gets 204 No
// Content, which tells an EventSource to stop reconnecting.
//
// A store that becomes unreachable while a stream is open does not break
// it: the heartbeats go on, and the events recorded meanwhile follow when
// the store is back, each once and in order, as far as the store's
// Subscribe promises it (the Redis backend's does, across a Redis
// restart).
//
// A stream opened while the backend is down (the store, or the queue that
// knows the task's owner, cannot be reached in time) is answered with 200
// and an event stream that holds only a comment saying why and a "retry:"
// line of Config.Retry, and then ends:
//
//	: task backend unavailable, reconnect in 3s
//	retry: 3000
//
// An EventSource takes that as a stream that ended: it reconnects after
// the delay with its Last-Event-ID, and again after each such answer, until
// the backend is back and the stream goes on after that id. A 503 would
// close it for good (an EventSource fails on any status but 200 and 204,
// and any type but text/event-stream), so a browser whose stream broke
// during an outage would lose its live view though the task goes on. The
// answer is the same in both stream modes, and for HEAD (without the
// body); it says nothing about the task, not even that it exists. What is
// decided before the backend is asked keeps its status: 404 for an id no
// task can have and 401 first; then, once the task's owner is read (with
// Identify, for a caller who is not an operator) or need not be, 403, 400
// for a Last-Event-ID over 256 bytes, with a line break or given twice,
// or an unknown mode, and the answer to a caller over its cap on open
// streams (below). A Last-Event-ID the store cannot parse gets its 400 once
// the store answers. The long poll (GET /tasks/{id}/?wait=), for clients
// that cannot hold a stream and read statuses themselves, keeps 503 with
// Retry-After, as every JSON route does.
//
// A stream of a caller that holds Config.MaxStreamsPerCaller open already
// (in this process) is answered the same way, before the stream starts
// and without taking a place under the cap:
//
//	: too many open streams for this caller, reconnect in 3s
//	retry: 3000
//
// An EventSource reconnects after the delay with its Last-Event-ID, and
// again after each such answer, until one of the caller's streams has
// closed; then it gets its stream, and misses nothing. A 429 would close
// it for good, so a page one stream over its caller's cap (a user with
// one tab too many) would lose its live view even once another stream
// closed. This answer also has a Retry-After header of Config.Retry
// (whole seconds), which an EventSource ignores: for other clients it is
// the sign, before the body, that the stream was refused. It is the same
// in both stream modes, and for HEAD (without the body). It comes before
// the store is asked for the task's events: it says neither whether the
// client has seen the task's end (the 204 comes once a place is free),
// nor, to an operator or to any caller without Identify, whether the
// task exists (the 404 likewise). The long poll is not counted under the
// cap.
//
// # Stream modes
//
// Every default message repeats every step so far: a run of 200 steps
// sends about 20,000 step copies to a client that watches it from its
// start. A client that keeps the state itself asks for the update stream
// instead, GET /task-status/{id}/?mode=updates (the mode parameter also
// takes "snapshots", the default; any other value, or the parameter given
// twice, is a 400). Its messages are all named, so EventSource.onmessage
// sees none of them:
//
//   - first, "event: snapshot": the whole snapshot, as a default message
//     carries it, that the client builds its state from. Its id is the
//     Last-Event-ID the stream resumes after (the snapshot at that event),
//     or empty for a watch from the start (the PENDING snapshot before the
//     first event);
//   - then, for every event after it, with the event's id, "event: update"
//     with what the event changed, and nothing else: "state", "status",
//     "progress", "final_result", "started_at", "ended_at" when they
//     changed; "step" and "index" for the step result the event appended
//     and its index in step_results; and "at", when the event was
//     recorded. For example {"step": {"type": "log", "message": "Searching",
//     "at": "..."}, "index": 12, "at": "..."}. Tokens come as "event: token"
//     messages, as in the default stream.
//
// The ids, the resume rules, the 204 after the end and the heartbeats are
// those of the default stream: a client that reconnects with its
// Last-Event-ID gets the snapshot at that id, then every later update
// once. A client applies a snapshot by replacing its state, and an update
// by setting the members it carries (status and progress are in
// "details" in a snapshot, updated_at is "at") and appending "step", whose
// "index" is the number of steps it holds.
//
// # Cross-origin use
//
// By default the API serves the pages of its own origin, and non-browser
// clients. A front end served from another origin (its own host, or a dev
// server on another port) is listed in [Config.CORS]:
//
//	h := ssehttp.New(ssehttp.Config{
//		Queue: broker, Progress: store, Registry: reg,
//		CORS: ssehttp.CORS{AllowedOrigins: []string{"https://app.example.com"}},
//	})
//
// The page's fetch and EventSource calls then work as from the same origin:
// its preflight requests (OPTIONS, sent before a POST with a JSON body, or
// a fetch that sets Last-Event-ID) are answered with the route's
// methods and the headers the API reads; every answer, errors and event
// streams included, names the page's origin in
// Access-Control-Allow-Origin; and its start-task and cancel-task requests
// pass [Config.CrossOrigin], which still refuses every other origin with
// 403. Cookies and HTTP authentication stay off unless
// [CORS.AllowCredentials] is set, for an Identify hook that reads them.
//
// # Tracing and metrics
//
// With an OpenTelemetry tracer provider (Config.TracerProvider, or the
// global one), start-task makes a span flows.start_task, the root of the
// task's trace: its enqueue and every run of the task on any worker are
// its descendants (see package queue). It is a child of the request's span
// when the host traces its requests (otelhttp, say), else a server span
// that continues the trace of a W3C traceparent header if the request
// has one. The meter provider (Config.MeterProvider, or the global one)
// gets flows.sse.streams, the task-status streams open.
package ssehttp
