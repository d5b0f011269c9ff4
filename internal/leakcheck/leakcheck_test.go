package leakcheck

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records a Fatalf instead of stopping.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestSettle(t *testing.T) {
	t.Run("goroutines that end pass", func(t *testing.T) {
		base := runtime.NumGoroutine()
		done := make(chan struct{})
		go func() { time.Sleep(20 * time.Millisecond); close(done) }()
		r := &recorder{TB: t}
		Settle(r, base, 5*time.Second)
		if r.failed != "" {
			t.Fatalf("Settle failed: %s", r.failed)
		}
		<-done
	})
	t.Run("a goroutine left fails, with its stack", func(t *testing.T) {
		// The previous subtest's goroutine may still be ending: had its
		// end been counted after base, it would make up for the parked
		// one, and Settle would pass.
		base := quietCount()
		stop := make(chan struct{})
		go parked(stop)
		r := &recorder{TB: t}
		Settle(r, base, 20*time.Millisecond)
		close(stop)
		if !strings.Contains(r.failed, "goroutines leaked") || !strings.Contains(r.failed, "leakcheck.parked") {
			t.Fatalf("Settle did not report the parked goroutine: %q", r.failed)
		}
	})
}

func parked(stop chan struct{}) { <-stop }

// quietCount returns the number of goroutines once it has stopped
// falling (for up to a second), so that goroutines already ending are
// not counted.
func quietCount() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}
