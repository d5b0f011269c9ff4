package main

import "runtime/metrics"

// schedLatencyMetric is the runtime's histogram of the time goroutines
// spend runnable before they run.
const schedLatencyMetric = "/sched/latencies:seconds"

// readMetric reads one of the runtime's metrics.
func readMetric(name string) metrics.Value {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value
}

// mallocs returns the heap allocations made by the process so far.
func mallocs() uint64 {
	if v := readMetric("/gc/heap/allocs:objects"); v.Kind() == metrics.KindUint64 {
		return v.Uint64()
	}
	return 0
}

// schedLatencies reads the scheduling latency histogram.
func schedLatencies() *metrics.Float64Histogram {
	if v := readMetric(schedLatencyMetric); v.Kind() == metrics.KindFloat64Histogram {
		return v.Float64Histogram()
	}
	return nil
}

// schedQuantile returns the q-quantile, in seconds, of the scheduling
// latencies recorded between the readings a and b (the upper bound of
// its bucket), or 0 if there is none.
func schedQuantile(a, b *metrics.Float64Histogram, q float64) float64 {
	if a == nil || b == nil || len(a.Counts) != len(b.Counts) {
		return 0
	}
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var seen uint64
	for i := range b.Counts {
		seen += b.Counts[i] - a.Counts[i]
		if seen > want {
			return b.Buckets[i+1]
		}
	}
	return b.Buckets[len(b.Buckets)-1]
}
