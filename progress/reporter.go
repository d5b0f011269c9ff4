package progress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/flowsrun/flows/internal/opctx"
	"github.com/flowsrun/flows/internal/text"
)

// Reporter is what a running flow calls to report its progress. Every
// method is safe for concurrent use and never blocks the flow for long:
// reporting is best effort for the flow, and a failure to record an event is
// logged by the implementation rather than returned.
//
// A worker's reporter (TaskReporter) records a report over its size
// limit, 1 MiB by default, as a log entry saying that it was dropped,
// and past the limit of a run's reports in all, 16 MiB by default, one
// log entry saying so and none of the run's later text.
type Reporter interface {
	// Status replaces the task's status line.
	Status(msg string)
	// Progress sets the percentage (clamped to 0-100) and, when msg is not
	// empty, the status line.
	Progress(percent int, msg string)
	// Log appends a "log" entry to the step results.
	Log(msg string)
	// ToolResult appends a "tool_result" entry. data is encoded as JSON;
	// a json.RawMessage is kept as it is.
	ToolResult(step, tool string, data any)
	// Token reports a chunk of text written by a language model. Tokens
	// travel to SSE clients as named "token" events; they do not change the
	// snapshot.
	Token(text string)
}

// Discard is a Reporter that records nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Status(string)                  {}
func (discard) Progress(int, string)           {}
func (discard) Log(string)                     {}
func (discard) ToolResult(string, string, any) {}
func (discard) Token(string)                   {}

// EncodeData turns a tool's output into JSON for StepResult.Data: a
// json.RawMessage or []byte holding valid JSON is kept as it is, anything
// else is marshalled; a value that cannot be marshalled becomes a JSON string
// describing the error.
func EncodeData(data any) json.RawMessage {
	switch d := data.(type) {
	case json.RawMessage:
		if json.Valid(d) {
			return d
		}
		data = string(d)
	case []byte:
		if json.Valid(d) {
			return json.RawMessage(d)
		}
		data = string(d)
	}
	b, err := json.Marshal(data)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprintf("unencodable tool output: %v", err))
	}
	return b
}

// ToolResultEvent returns the EventStep that Reporter.ToolResult appends.
func ToolResultEvent(step, tool string, data any) Event {
	return Event{Type: EventStep, Step: &StepResult{Type: StepToolResult, StepName: step, Tool: tool, Data: EncodeData(data)}}
}

// LogEvent returns the EventStep that Reporter.Log appends.
func LogEvent(msg string) Event {
	return Event{Type: EventStep, Step: &StepResult{Type: StepLog, Message: msg}}
}

// TaskReporter is the Reporter of one task, writing to a Store. Workers
// create one per attempt; it also carries the transitions that only the
// worker makes (Start, Succeed, Fail).
//
// The Reporter methods do not wait for the store. Each event joins a batch
// that one background goroutine appends as soon as the Append before it
// has returned, so events are recorded in the order they were reported,
// and a flow that reports faster than the store records (a burst of log
// lines, a stream of model tokens) costs one Append per round trip to the
// store rather than one per event, and is not slowed down by it. A failure
// to record an event is logged, except ErrFinished: once the task has
// ended, later reports are expected to be refused. Past maxPending events
// waiting, reporting waits for the store, so that memory stays bounded.
//
// Each batch is appended with an append key of its own (see
// WithAppendKey): a random prefix drawn for the reporter and the batch's
// number. A batch whose Append fails with ErrNotSent (the store could not
// reach its storage, so nothing was recorded) or ErrMaybeSent (the
// outcome is unknown, a timeout once it was sent or a connection cut
// before the reply, and the store honours the key, so that sending the
// batch again with it records its events once) is appended again, with
// the same key, after a pause of 10 ms that doubles up to 250 ms, until
// it lands, the store fails otherwise (a fence that refuses the reports
// of a run whose lease is lost, ErrFinished) or 10 s have passed; the
// batches after it wait, so that events keep their order. No other
// failure is retried: with a store that ignores append keys, a call whose
// outcome is unknown may have been recorded, so that sending it again
// could record its events twice. Such a batch of reports is dropped and
// logged.
//
// A report holds at most DefaultMaxReportBytes of text and JSON (see
// Event.Size), unless SetMaxReportBytes says otherwise, so that one flow
// that dumps a web page or an image into a log line does not hold up the
// store for every other task (on Redis, the worker's heartbeats and the
// web processes' live feed). A report over the limit is not recorded: a
// log entry takes its place, saying what was dropped, how big it was and
// the limit ("report dropped: log entry of 4194304 bytes, over the
// limit of 1048576 bytes per report"; a few hundred bytes at most,
// recorded whatever the limit), and the first drop of a reporter
// is logged as a warning. Start and Fail cut their status line to the
// limit, and Succeed refuses a result over it with ErrTooLarge,
// recording nothing. The batches of one Append hold at most the limit in
// bytes, or one event, and past 16 times the limit in bytes waiting,
// reporting waits for the store, as past maxPending events.
//
// The reports of the reporter's run hold at most RunReports times the
// limit of one report in all (DefaultMaxRunReportBytes by default, none
// when a report has no limit), unless SetMaxRunReportBytes says
// otherwise, so that a flow that reports at the limit of a report again
// and again (or one that logs what its callers send, or logs an empty
// line in a loop) does not make its task's log, which every snapshot
// read and every SSE client that connects from the start reads whole,
// grow without bound. Each report counts its text and JSON (see
// Event.Size) and ReportOverheadBytes more, what recording an event
// costs whatever it holds. The first report that would take the run
// past its limit is replaced by a log entry saying so ("report dropped:
// log entry of 1048576 bytes would take this run past its limit of
// 16777216 bytes of reports ..."; the run's total may pass the limit by
// that entry), and the first such drop is logged as a warning. Later log
// entries, tool results, status lines and tokens of the run are dropped
// without a word; a progress report is still recorded, without its
// status line, when its percentage differs from the last one recorded,
// ProgressPastRunLimit times at most (so that a watcher still sees the
// run move), and Start, Succeed and Fail are recorded whatever the
// limit, and not counted (each holds a report at most). So is a Report call that holds
// a state change, with the events reported with it: a worker reports the
// start of a run that way, with the log entry saying which attempt
// starts. The limit is the run's, that is the reporter's: a task run
// again (a retry, a hand-back) gets a new reporter, so that a task's log
// holds at most the limit for each run.
//
// Start, Succeed, Fail and Flush wait for the store. Start and the
// terminal transitions are recorded after every event reported before
// them, in the same Append when they can, and may therefore wait for the
// retries of those events. A batch that holds one of them is retried as
// the others are (a store that honours append keys answers a terminal
// batch sent again after its first Append ended the task as it answered
// that one, see Store.Append), and its caller gets the last error: a
// worker whose task's end could still not be recorded gives the task
// back to run again. The caller's ctx bounds its wait, not the retries:
// once it ends, the call returns ctx.Err() while what it queued is still
// sent and retried behind it, and a store of the caller's that refuses to
// record ends the retries (a worker's fence does, once its worker has
// stopped or the run's lease may have passed). That holds too when the
// call sends the queued batches itself (no Append in flight): it stops
// before the next Append or resend and hands them to a goroutine, so
// that only an Append it has under way when ctx ends, bounded by its own
// 10 s deadline, is waited for.
type TaskReporter struct {
	store  Store
	taskID string
	logger *slog.Logger

	mu sync.Mutex
	// queue holds the batches not sent yet, in order; inflight is the one
	// being appended, and sending is set while a goroutine sends or one
	// has been started to. Until that goroutine has taken a batch
	// (started), record may take its place (see record): gen tells it
	// then that it has nothing to do.
	queue    []*batch
	inflight *batch
	sending  bool
	started  bool
	gen      uint64
	waiting  int // events in queue
	// key holds the batches' append keys as they are made, in keyBuf: a
	// random prefix drawn at the first batch and a dot (keyLen bytes),
	// then the number of batches so far, seq; both in hexadecimal.
	key    []byte
	keyBuf [34]byte
	keyLen int
	seq    uint64
	// limit is the most bytes one report may carry, 0 for no limit
	// (see SetMaxReportBytes); waitingBytes is the size of the events
	// in queue; warned is set once a report over the limit has been
	// logged.
	limit        int
	waitingBytes int
	warned       bool
	// runSet is what SetMaxRunReportBytes was given: 0 for RunReports
	// times limit, negative for no limit (see runLimitLocked);
	// runBytes is what the events queued so far count against it (see
	// addRunLocked); over is set once a report was dropped for the
	// run's limit, after which no text is queued, and pastProgress
	// counts the progress reports queued since.
	runSet       int
	runBytes     int
	over         bool
	pastProgress int
	// lastProgress is the percentage of the last progress report
	// queued plus one, 0 before the first.
	lastProgress int
}

// batch is events appended in one call.
type batch struct {
	events []Event
	// bytes is the size of events (see Event.Size).
	bytes int
	// async is set when a Reporter method added an event: nobody waits
	// for the outcome, so a failure is logged. sync is set when Start,
	// Succeed or Fail added one: its caller gets the outcome.
	async, sync bool
	// closed is set once a terminal event is in: nothing may follow it in
	// the same Append.
	closed bool
	// key is the batch's append key, given as it is taken (see
	// takeLocked); keyed is the context of its first Append (see
	// context).
	key   string
	keyed keyedContext
	// finished is set once the Append has returned, with its error in
	// err; done, made for the first caller that waits (see doneLocked),
	// is closed then.
	finished bool
	done     chan struct{}
	err      error
}

// closedChan is the done channel of a batch finished before anyone
// waited for it.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// doneLocked returns a channel closed once b has been appended. r.mu
// must be held.
func (r *TaskReporter) doneLocked(b *batch) <-chan struct{} {
	if b.finished {
		return closedChan
	}
	if b.done == nil {
		b.done = make(chan struct{})
	}
	return b.done
}

// appendTimeout bounds a TaskReporter's Append (to a second more: the
// context is shared by the Appends of that second, see opctx).
const appendTimeout = 10 * time.Second

var appendDeadlines = opctx.New(context.Background(), appendTimeout, time.Second)

// maxPending bounds the events a TaskReporter holds before they are sent.
const maxPending = 1000

// pendingReports bounds the bytes a TaskReporter holds before they are
// sent, in reports at its limit: 16 MiB with DefaultMaxReportBytes.
const pendingReports = 16

// DefaultMaxReportBytes is the limit on the size of one report (see
// Event.Size) that NewTaskReporter sets: 1 MiB, what ssehttp accepts as
// a task's inputs by default, and far below what Redis takes in one
// value (512 MB) or lets a subscriber fall behind by (a pub/sub client
// is cut off past 32 MB at once, or 8 MB for 60 s, by default).
const DefaultMaxReportBytes = 1 << 20

// RunReports is how many times the limit of one report the reports of
// one run may count in all by default (see TaskReporter): a reporter's
// limit of a run is this many times its limit of one report unless set
// (see SetMaxRunReportBytes), and so is a worker's MaxRunReportBytes
// (see queue.WorkerConfig). With ReportOverheadBytes counted for each,
// RunReports-1 reports at the limit fit, and many small ones.
const RunReports = 16

// ReportOverheadBytes is what each report of a run counts against the
// run's limit (see TaskReporter and SetMaxRunReportBytes) on top of its
// text and JSON (see Event.Size): what recording an event costs
// whatever it holds, so that empty reports are bounded too. An empty
// log entry takes about 53 bytes of a task's snapshot as JSON and about
// 87 in its event log (its id, time and type as JSON); a progress
// report without a status line about 82 in the event log.
const ReportOverheadBytes = 64

// ProgressPastRunLimit is how many progress reports a run records at
// most once its reports have passed the run's limit (see TaskReporter),
// each without its status line and only when its percentage differs
// from the last one recorded: enough for a watcher to see a run go from
// 0 to 100 percent, so that the run's events stay bounded.
const ProgressPastRunLimit = 100

// DefaultMaxRunReportBytes is the limit on what the reports of one run
// count in all (their text and JSON, and ReportOverheadBytes each) of a
// TaskReporter with the default limit of one report: RunReports times
// DefaultMaxReportBytes, 16 MiB. It keeps a
// task's log, which every snapshot read and every SSE client that
// connects from its start reads whole, within what a browser fetches
// without a second thought and what the reporter holds waiting for the
// store at most (16 reports at the limit, see TaskReporter), while a
// model's streamed answer (some hundred thousand tokens) or a run's log
// of thousands of lines fits many times over.
const DefaultMaxRunReportBytes = RunReports * DefaultMaxReportBytes

// ErrTooLarge is returned (wrapped) by TaskReporter.Succeed for a result
// over the reporter's limit (see TaskReporter.SetMaxReportBytes); nothing
// is recorded then.
var ErrTooLarge = errors.New("progress: report too large")

// NewTaskReporter returns a reporter writing task taskID's events to store.
// A nil logger means slog.Default().
func NewTaskReporter(store Store, taskID string, logger *slog.Logger) *TaskReporter {
	if logger == nil {
		logger = slog.Default()
	}
	return &TaskReporter{store: store, taskID: taskID, logger: logger, limit: DefaultMaxReportBytes}
}

// SetMaxRunReportBytes sets the most bytes the reports of the
// reporter's run may count in all, their text and JSON (see Event.Size)
// and ReportOverheadBytes each (see TaskReporter): zero means RunReports times the limit of one report
// (see SetMaxReportBytes), DefaultMaxRunReportBytes by default and none
// when that limit is none, as for a worker (queue.WorkerConfig); a
// negative n means no limit. Call it before the first report.
func (r *TaskReporter) SetMaxRunReportBytes(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runSet = n
}

// runLimitLocked returns the most bytes the reports of the run may carry
// in all, 0 for no limit (see SetMaxRunReportBytes). r.mu must be held.
func (r *TaskReporter) runLimitLocked() int {
	switch {
	case r.runSet < 0:
		return 0
	case r.runSet > 0:
		return r.runSet
	case r.limit > math.MaxInt/RunReports:
		return math.MaxInt
	default:
		return RunReports * r.limit // 0, no limit, when limit is none
	}
}

// SetMaxReportBytes sets the most bytes of text and JSON one report may
// carry (see Event.Size and TaskReporter): zero means
// DefaultMaxReportBytes, a negative n means no limit. Call it before the
// first report.
func (r *TaskReporter) SetMaxReportBytes(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case n == 0:
		r.limit = DefaultMaxReportBytes
	case n < 0:
		r.limit = 0
	default:
		r.limit = n
	}
}

// TaskID returns the id of the task this reporter writes to.
func (r *TaskReporter) TaskID() string { return r.taskID }

// addLocked puts e in the last open batch, or a new one if e would take
// that batch over the limit, and returns it. r.mu must be held.
func (r *TaskReporter) addLocked(e Event, async bool) *batch {
	var b *batch
	size := e.Size()
	if n := len(r.queue); n > 0 && !r.queue[n-1].closed && (r.limit == 0 || r.queue[n-1].bytes+size <= r.limit) {
		b = r.queue[n-1]
	} else {
		// Room for a short flow's whole run (start, a few reports, end)
		// without growing.
		b = &batch{events: make([]Event, 0, 4)}
		r.queue = append(r.queue, b)
	}
	b.events = append(b.events, e)
	b.async = b.async || async
	b.sync = b.sync || !async
	b.closed = e.Terminal()
	b.bytes += size
	if e.Type == EventProgress {
		r.lastProgress = e.Progress + 1
	}
	r.waiting++
	r.waitingBytes += size
	return b
}

// takeLocked removes the first batch of the queue and makes it the one in
// flight. r.mu must be held and the queue not empty.
func (r *TaskReporter) takeLocked() *batch {
	b := r.queue[0]
	r.queue[0] = nil
	r.queue = r.queue[1:]
	r.waiting -= len(b.events)
	r.waitingBytes -= b.bytes
	r.inflight = b
	if r.key == nil {
		r.key = append(strconv.AppendUint(r.keyBuf[:0], rand.Uint64(), 16), '.')
		r.keyLen = len(r.key)
	}
	r.seq++
	r.key = strconv.AppendUint(r.key[:r.keyLen], r.seq, 16)
	b.key = string(r.key)
	return b
}

// emit queues events without waiting for the store, in one batch unless
// one of them ends it or they hold more than the limit (see addLocked),
// each report over the limit replaced by a log entry saying so.
func (r *TaskReporter) emit(events ...Event) {
	r.mu.Lock()
	for r.waiting >= maxPending || r.limit > 0 && r.waitingBytes >= pendingReports*r.limit {
		// Wait for the batch in flight, or for the first one queued
		// when none is (the goroutine started to send it has not run
		// yet, on a busy machine) or the one in flight has just been
		// appended (the sender has yet to take the next).
		b := r.inflight
		if b == nil || b.finished {
			if len(r.queue) == 0 {
				break
			}
			if !r.sending {
				r.startSenderLocked()
			}
			b = r.queue[0]
		}
		done := r.doneLocked(b)
		r.mu.Unlock()
		<-done
		r.mu.Lock()
	}
	var warn []any
	var tooLarge []error
	var runWarn []any
	transition := slices.ContainsFunc(events, func(e Event) bool { return e.Type == EventState })
	for _, e := range events {
		report, replaced := e, false
		if r.limit > 0 && e.Size() > r.limit {
			if e.Type == EventState {
				var err error
				if e, err = r.fitStateLocked(e); err != nil {
					tooLarge = append(tooLarge, err)
					continue
				}
			} else {
				e, replaced = dropped(e, r.limit), true
			}
		}
		queued := true
		if transition {
			r.addLocked(e, true) // not counted, see addRunLocked
		} else {
			var passed bool
			if queued, passed = r.addRunLocked(e, report); passed {
				runWarn = []any{"task_id", r.taskID, "type", report.Type, "limit", r.runLimitLocked()}
			}
		}
		if replaced && queued && !r.warned {
			// Past the run's limit, no entry takes report's place.
			r.warned = true
			warn = []any{"task_id", r.taskID, "type", report.Type, "bytes", report.Size(), "limit", r.limit}
		}
	}
	if !r.sending && len(r.queue) > 0 {
		r.startSenderLocked()
	}
	r.mu.Unlock()
	if warn != nil {
		r.logger.Warn("flows: a report over the size limit was replaced by a log entry saying so "+
			"(raise the limit with WorkerConfig.MaxReportBytes, or report a reference to large outputs); "+
			"the task's other drops are not logged", warn...)
	}
	if runWarn != nil {
		r.logger.Warn("flows: the reports of a run passed its limit: its later log entries, tool results, "+
			"status lines and tokens are dropped, a log entry says so "+
			"(raise the limit with WorkerConfig.MaxRunReportBytes, or report less)", runWarn...)
	}
	for _, err := range tooLarge {
		r.logger.Warn("flows: progress event not recorded", "task_id", r.taskID, "type", EventState, "err", err)
	}
}

// addRunLocked queues e, a report of the run's flow or the log entry
// that takes the place of report, one over the limit of a report (see
// dropped), as the limit of the run allows (see TaskReporter); it
// reports whether e was queued, and whether report is the first that
// passed the run's limit. e is no state change (emit queues those, and
// the events reported with them, uncounted). Each report counts its
// size and ReportOverheadBytes. Past the limit, a progress report is
// queued without its status line when its percentage differs from the
// last one queued, ProgressPastRunLimit times at most, and any other
// report is dropped; the first report dropped is replaced by a log
// entry saying so, which names report (see runDropped). r.mu must be
// held.
func (r *TaskReporter) addRunLocked(e, report Event) (queued, passed bool) {
	size, limit := e.Size()+ReportOverheadBytes, r.runLimitLocked()
	if limit == 0 || !r.over && r.runBytes <= limit-size {
		r.runBytes += size
		r.addLocked(e, true)
		return true, false
	}
	if !r.over {
		r.over, passed = true, true
		d := runDropped(report, limit)
		r.runBytes += d.Size() + ReportOverheadBytes
		r.addLocked(d, true)
	}
	if report.Type == EventProgress && report.Progress+1 != r.lastProgress && r.pastProgress < ProgressPastRunLimit {
		report.Status = "" // the percentage is kept
		r.pastProgress++
		r.addLocked(report, true)
	}
	return false, passed
}

// runDropped returns the log entry that takes the place of e, the first
// report of a run that would take it past limit, the run's limit: what
// e was, its size and the limit, and what becomes of the run's later
// reports. It holds a few hundred bytes at most.
func runDropped(e Event, limit int) Event {
	return LogEvent(fmt.Sprintf("report dropped: %s of %d bytes would take this run past its limit of %d bytes of reports "+
		"(WorkerConfig.MaxRunReportBytes); its later log entries, tool results, status lines and tokens are dropped too, "+
		"its progress, state and result are still recorded", reportKind(e), e.Size(), limit))
}

// dropped returns the log entry that takes the place of e, a report
// over limit: what e was, its size and the limit. It is recorded
// whatever the limit: its step and tool names are clipped, so that it
// holds a few hundred bytes at most.
func dropped(e Event, limit int) Event {
	return LogEvent(fmt.Sprintf("report dropped: %s of %d bytes, over the limit of %d bytes per report", reportKind(e), e.Size(), limit))
}

// reportKind names the kind of report e is, for the log entry that
// takes its place when it is dropped; its step and tool names are
// clipped.
func reportKind(e Event) string {
	var what string
	switch e.Type {
	case EventStep:
		what = "log entry"
		if e.Step != nil && e.Step.Type == StepToolResult {
			what = fmt.Sprintf("tool result (step %q, tool %q)", text.Clip(e.Step.StepName, 64), text.Clip(e.Step.Tool, 64))
		}
	case EventStatus:
		what = "status line"
	case EventProgress:
		what = "progress report"
	case EventToken:
		what = "token"
	default:
		what = text.Clip(string(e.Type), 64) + " event"
	}
	return what
}

// fitStateLocked returns e, a state event, with its status line cut to
// the reporter's limit, or ErrTooLarge when its result is over the
// limit. The status line and the result are held to the limit each, so
// that a result at the limit is recorded with its status. r.mu must be
// held.
func (r *TaskReporter) fitStateLocked(e Event) (Event, error) {
	if r.limit == 0 {
		return e, nil
	}
	if len(e.Result) > r.limit {
		return e, fmt.Errorf("%w: result of %d bytes is over the limit of %d bytes per report", ErrTooLarge, len(e.Result), r.limit)
	}
	e.Status = text.Cut(e.Status, r.limit)
	return e, nil
}

// startSenderLocked starts a goroutine that sends the queued batches.
// r.mu must be held.
func (r *TaskReporter) startSenderLocked() {
	r.sending, r.started = true, false
	r.gen++
	go r.sendLoop(r.gen)
}

// sendLoop appends the queued batches one after the other until none is
// left, unless record has taken its place before it started (gen is no
// longer the reporter's).
func (r *TaskReporter) sendLoop(gen uint64) {
	r.mu.Lock()
	if r.gen != gen {
		r.mu.Unlock()
		return
	}
	r.started = true
	r.mu.Unlock()
	r.sendUntil(nil, nil)
}

// sendUntil appends the queued batches one after the other on the
// calling goroutine, which must be the sender (r.sending and r.started
// set), until none is left or last has been appended; then a goroutine
// takes over the batches left, if any. It returns true then.
//
// stop, when not nil, is the Done channel of the context of a caller
// that sends for itself (record): once it is closed, sendUntil returns
// false, before the next Append or during the pause before a resend,
// and a goroutine takes over as the sender, with the batch being resent
// (see appendUntil) and the batches left. An Append already made is
// waited for: its own deadline (appendTimeout) bounds it.
func (r *TaskReporter) sendUntil(stop <-chan struct{}, last *batch) bool {
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.inflight, r.sending = nil, false
			r.mu.Unlock()
			return true
		}
		if closed(stop) {
			r.inflight = nil
			r.startSenderLocked()
			r.mu.Unlock()
			return false
		}
		b := r.takeLocked()
		r.mu.Unlock()
		if !r.appendUntil(stop, b) {
			return false
		}
		if b == last {
			r.mu.Lock()
			r.inflight = nil
			if len(r.queue) > 0 {
				r.startSenderLocked() // events reported meanwhile
			} else {
				r.sending = false
			}
			r.mu.Unlock()
			return true
		}
	}
}

// closed reports whether stop, which may be nil, is closed.
func closed(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// Pauses between the Appends of a batch that was not sent (see resend).
const (
	firstRetryPause = 10 * time.Millisecond
	maxRetryPause   = 250 * time.Millisecond
)

// appendUntil records b, resending it as resend.run says, marks it finished
// and returns true; but once stop (see sendUntil) is closed during the
// pause before a resend, it returns false at once, and a goroutine takes
// over as the sender: it goes on with b's resends, within the same time,
// marks b finished and sends the batches queued after it.
func (r *TaskReporter) appendUntil(stop <-chan struct{}, b *batch) bool {
	_, err := r.store.Append(b.context(), r.taskID, b.events...)
	if err != nil && resendable(err) {
		rs := r.newResend(b, err)
		if err = rs.run(stop, err); resendable(err) && closed(stop) {
			go func() {
				r.finish(b, rs.run(nil, err))
				r.sendUntil(nil, nil)
			}()
			return false
		}
	}
	r.finish(b, err)
	return true
}

// finish marks b appended, with err the outcome of its last Append, and
// logs a failure nobody waits for.
func (r *TaskReporter) finish(b *batch, err error) {
	if err != nil && b.async && !errors.Is(err, ErrFinished) {
		r.logger.Warn("flows: progress event not recorded", "task_id", r.taskID, "type", b.events[0].Type, "events", len(b.events), "err", err)
	}
	r.mu.Lock()
	b.err, b.finished = err, true
	if b.done != nil {
		close(b.done)
	}
	r.mu.Unlock()
}

// context returns the context of an Append of b: a shared deadline (see
// appendDeadlines), with b's append key (every batch has one, see
// takeLocked). The first Append of a batch gets b.keyed, which costs no
// allocation; a resend (rare) gets a context of its own, since a store
// may still hold the first.
func (b *batch) context() context.Context {
	ctx := appendDeadlines.Get()
	if b.keyed.Context == nil {
		b.keyed = keyedContext{Context: ctx, key: b.key}
		return &b.keyed
	}
	return WithAppendKey(ctx, b.key)
}

// resendable reports whether a keyed Append that failed with err may be
// made again: it was not sent (ErrNotSent), or its outcome is unknown and
// the store honours its key (ErrMaybeSent).
func resendable(err error) bool {
	return errors.Is(err, ErrNotSent) || errors.Is(err, ErrMaybeSent)
}

// resend is the resending of b, a keyed batch whose Append failed with
// ErrNotSent or ErrMaybeSent (see run).
type resend struct {
	r      *TaskReporter
	b      *batch
	giveUp time.Time     // when the resends stop
	pause  time.Duration // the pause before the next resend
	timer  *time.Timer   // fires at the end of that pause
}

// newResend logs the failure err of b's first Append and starts the
// pause before its first resend.
func (r *TaskReporter) newResend(b *batch, err error) *resend {
	what := "progress event" // reports nobody waits for
	if b.sync {
		what = "task state change" // Start, Succeed or Fail: a worker's run waits for it
	}
	msg := "flows: " + what + " not sent; retrying"
	if !errors.Is(err, ErrNotSent) {
		msg = "flows: " + what + " may not have been recorded; retrying with its append key"
	}
	r.logger.Debug(msg, "task_id", r.taskID, "events", len(b.events), "err", err)
	return &resend{r: r, b: b, giveUp: time.Now().Add(appendTimeout), pause: firstRetryPause, timer: time.NewTimer(firstRetryPause)}
}

// run appends the batch again with its key, after a pause that doubles
// each time up to maxRetryPause, as long as its Append fails with
// ErrNotSent or ErrMaybeSent (err, the last failure, to begin with) and
// for appendTimeout at most from the first failure, and returns the last
// error (nil once it lands). Any other failure is not retried: with a
// store that ignores append keys, a batch that may have been recorded is
// not sent again, lest its events be recorded twice. A refusal of the
// store (a worker's fence once its lease is lost, ErrFinished) ends the
// resends too. Once stop (which may be nil) is closed, run returns err
// at the end of no pause, with the pause under way kept for a later run.
func (rs *resend) run(stop <-chan struct{}, err error) error {
	for resendable(err) && time.Now().Add(rs.pause).Before(rs.giveUp) {
		select {
		case <-rs.timer.C:
		case <-stop:
			return err
		}
		_, err = rs.r.store.Append(rs.b.context(), rs.r.taskID, rs.b.events...)
		rs.pause = min(2*rs.pause, maxRetryPause)
		rs.timer.Reset(rs.pause)
	}
	rs.timer.Stop()
	return err
}

// record appends e after every event reported before it and waits for
// the outcome, or for ctx to end. When no Append is in flight, the calling
// goroutine sends the queued batches itself, up to e's, in place of a
// goroutine started for them that has not begun yet: a flow that ends
// soon after reporting (most do, when the store is busy) has all its
// events appended in one call, without a hand-over between goroutines.
// Once ctx ends it stops sending, at the latest when the Append under way
// returns, and a goroutine takes over the batch being resent and those
// left (see sendUntil): ctx bounds the wait, as it does for a caller
// that waits for the sender, and nothing queued is dropped for it.
func (r *TaskReporter) record(ctx context.Context, e Event) error {
	r.mu.Lock()
	e, err := r.fitStateLocked(e)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	b := r.addLocked(e, false)
	if r.sending && r.started {
		done := r.doneLocked(b)
		r.mu.Unlock()
		select {
		case <-done:
			return r.batchErr(b)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.sending, r.started = true, true
	r.gen++ // a sendLoop started for the batches before b now has nothing to do
	r.mu.Unlock()
	if !r.sendUntil(ctx.Done(), b) {
		return ctx.Err() // a goroutine goes on sending
	}
	return r.batchErr(b)
}

// batchErr returns the error of the finished batch b.
func (r *TaskReporter) batchErr(b *batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return b.err
}

// Flush waits until every event reported so far has been appended (or
// has failed to be, which is logged), or until ctx ends.
func (r *TaskReporter) Flush(ctx context.Context) error {
	r.mu.Lock()
	last := r.inflight
	if n := len(r.queue); n > 0 {
		last = r.queue[n-1]
	}
	if last == nil {
		r.mu.Unlock()
		return nil
	}
	done := r.doneLocked(last)
	r.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status implements Reporter.
func (r *TaskReporter) Status(msg string) { r.emit(Event{Type: EventStatus, Status: msg}) }

// Progress implements Reporter.
func (r *TaskReporter) Progress(percent int, msg string) {
	r.emit(Event{Type: EventProgress, Progress: min(max(percent, 0), 100), Status: msg})
}

// Log implements Reporter.
func (r *TaskReporter) Log(msg string) { r.emit(LogEvent(msg)) }

// ToolResult implements Reporter.
func (r *TaskReporter) ToolResult(step, tool string, data any) {
	r.emit(ToolResultEvent(step, tool, data))
}

// Token implements Reporter.
func (r *TaskReporter) Token(text string) {
	if text != "" {
		r.emit(Event{Type: EventToken, Token: text})
	}
}

// Report queues events as the Reporter methods do: in order, after every
// event reported before, without waiting for the store, in one Append
// with the events reported next if they can. A failure to record them is
// logged, except ErrFinished. An event over the reporter's limit is
// replaced by a log entry saying so, as a report of the Reporter methods
// is; but a state event's status line is cut to the limit instead, and
// one whose result is over the limit is not recorded (ErrTooLarge,
// logged). The events count against the limit of the run, as those of
// the Reporter methods do, unless one of them is a state change: then
// none of them is counted or dropped for it (see TaskReporter).
func (r *TaskReporter) Report(events ...Event) {
	if len(events) > 0 {
		r.emit(events...)
	}
}

// Start moves the task to PROGRESS with the given status line (cut to
// the reporter's limit, see SetMaxReportBytes).
func (r *TaskReporter) Start(ctx context.Context, status string) error {
	return r.record(ctx, Event{Type: EventState, State: StateProgress, Status: status})
}

// Succeed moves the task to SUCCESS with result (encoded as by EncodeData),
// after the events reported before. It returns ErrFinished if the task had
// already ended, and an error wrapping ErrTooLarge, recording nothing, if
// the encoded result holds more bytes than the reporter's limit (see
// SetMaxReportBytes).
func (r *TaskReporter) Succeed(ctx context.Context, result any) error {
	return r.record(ctx, Event{Type: EventState, State: StateSuccess, Status: "Completed", Result: EncodeData(result)})
}

// SucceedJSON moves the task to SUCCESS with result, JSON its caller
// encoded, as Succeed does, but records result as it is, without the
// pass over it that EncodeData makes to check it: a worker, which
// encodes its flow's result itself (and fails a task whose result cannot
// be encoded), calls it. The store refuses a result that is not valid
// JSON (an error wrapping ErrInvalidEvent), recording nothing; a result
// over the reporter's limit is refused with ErrTooLarge, as by Succeed.
func (r *TaskReporter) SucceedJSON(ctx context.Context, result json.RawMessage) error {
	return r.record(ctx, Event{Type: EventState, State: StateSuccess, Status: "Completed", Result: result})
}

// Fail moves the task to FAILURE with reason as its status line (cut to
// the reporter's limit, see SetMaxReportBytes), after the events
// reported before. It returns ErrFinished if the task had already ended.
func (r *TaskReporter) Fail(ctx context.Context, reason string) error {
	return r.record(ctx, Event{Type: EventState, State: StateFailure, Status: reason})
}
