package telemetry

import (
	"testing"
)

// BenchmarkTraceparent is what a task's trace context costs the library:
// written once where the task is enqueued, read at each run.
func BenchmarkTraceparent(b *testing.B) {
	sc := SpanContext(validParent, "")
	b.Run("format", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Format(sc)
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = SpanContext(validParent, "")
		}
	})
}
