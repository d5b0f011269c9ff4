package ssehttp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/flowsrun/flows/progress"
)

// discardWriter is a ResponseWriter that keeps nothing, so that the
// benchmark measures the encoding alone.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkSnapshotMessage measures what the event stream does for each
// event of a task: fold it into the snapshot and write the snapshot as one
// SSE message, for tasks with a growing number of step results.
func BenchmarkSnapshotMessage(b *testing.B) {
	for _, steps := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("steps=%d", steps), func(b *testing.B) {
			snap := progress.NewSnapshot()
			snap.Apply(progress.Event{Type: progress.EventState, State: progress.StateProgress, Status: "Running"})
			for i := range steps {
				snap.Apply(progress.ToolResultEvent("search", "web", json.RawMessage(fmt.Sprintf(`{"hits":%d,"url":"https://example.com/%d"}`, i, i))))
			}
			w := &discardWriter{h: http.Header{}}
			s := &stream{w: w, rc: http.NewResponseController(w), timeout: time.Minute}
			ev := progress.Event{ID: "1764111600000-12", Type: progress.EventProgress, Progress: 42, Status: "Searching the web"}
			b.ReportAllocs()
			for b.Loop() {
				snap.Apply(ev)
				s.snapshot(ev.ID, snap)
			}
			if s.err != nil {
				b.Fatal(s.err)
			}
			b.ReportMetric(float64(w.n)/float64(b.N), "B/msg")
		})
	}
}

// BenchmarkTokenMessage measures the named message of one model token.
func BenchmarkTokenMessage(b *testing.B) {
	w := &discardWriter{h: http.Header{}}
	s := &stream{w: w, rc: http.NewResponseController(w), timeout: time.Minute}
	ev := progress.Event{ID: "1764111600000-12", Type: progress.EventToken, Token: " the"}
	b.ReportAllocs()
	for b.Loop() {
		s.token(ev)
	}
	if s.err != nil {
		b.Fatal(s.err)
	}
}
