// Package leakcheck lets tests check that the goroutines the code under
// test started have ended.
package leakcheck

import (
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// Settle waits up to within for the number of goroutines to fall back to
// baseline (a runtime.NumGoroutine() taken before), and fails tb with a
// dump of every goroutine if it does not.
func Settle(tb testing.TB, baseline int, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			var buf strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			tb.Fatalf("goroutines leaked: %d goroutines, %d before:\n%s", n, baseline, buf.String())
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
