package progress

import (
	"strconv"
	"strings"
	"sync"
)

// Recorder is a Reporter that keeps everything reported to it in memory,
// for unit tests of flows: run a flow with a Recorder as its Task.Progress,
// then look at the Snapshot a client would have seen, every Event in order,
// or the Tokens a model wrote.
//
// Events get ids "1", "2", ... in the order they were reported, as a
// MemoryStore would give them. A Recorder is safe for concurrent use; its
// zero value is ready to use.
type Recorder struct {
	mu     sync.Mutex
	events []Event
	snap   Snapshot
	tokens strings.Builder
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{} }

var _ Reporter = (*Recorder)(nil)

func (r *Recorder) record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap.State == "" {
		r.snap = NewSnapshot()
	}
	e = cloneEvent(e)
	e.ID = strconv.Itoa(len(r.events) + 1)
	r.events = append(r.events, e)
	r.snap.Apply(e)
	if e.Type == EventToken {
		r.tokens.WriteString(e.Token)
	}
}

// Status implements Reporter.
func (r *Recorder) Status(msg string) { r.record(Event{Type: EventStatus, Status: msg}) }

// Progress implements Reporter. The percentage is clamped to 0-100, as a
// TaskReporter does.
func (r *Recorder) Progress(percent int, msg string) {
	r.record(Event{Type: EventProgress, Progress: min(max(percent, 0), 100), Status: msg})
}

// Log implements Reporter.
func (r *Recorder) Log(msg string) { r.record(LogEvent(msg)) }

// ToolResult implements Reporter.
func (r *Recorder) ToolResult(step, tool string, data any) {
	r.record(ToolResultEvent(step, tool, data))
}

// Token implements Reporter. Empty chunks are ignored, as a TaskReporter
// ignores them.
func (r *Recorder) Token(text string) {
	if text != "" {
		r.record(Event{Type: EventToken, Token: text})
	}
}

// Snapshot returns the snapshot the reported events add up to: what a
// client watching the task would see before the worker records the
// flow's final state. Before anything is reported it is NewSnapshot().
func (r *Recorder) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap.State == "" {
		return NewSnapshot()
	}
	return r.snap.Clone()
}

// Events returns a copy of every event reported so far, in order.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return cloneEvents(r.events)
}

// Tokens returns the text of every Token call so far, concatenated.
func (r *Recorder) Tokens() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens.String()
}

// Reset forgets everything recorded, so that one Recorder can serve
// several runs.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
	r.snap = Snapshot{}
	r.tokens.Reset()
}
