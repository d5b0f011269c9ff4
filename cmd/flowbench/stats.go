package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// printer writes the command's output: a header, then one line per figure.
type printer struct {
	w       io.Writer
	verbose bool
}

func (p *printer) header(format string, args ...any) {
	fmt.Fprintf(p.w, "# "+format+"\n", args...)
}

// note prints a comment line, only with -v.
func (p *printer) note(format string, args ...any) {
	if p.verbose {
		fmt.Fprintf(p.w, "#   "+format+"\n", args...)
	}
}

// figure prints one figure: its name, unit, the median of values and
// their spread, and the parameters of the runs.
//
//	throughput  tasks/s  21034  (20511..21890)  runs=5 n=50000 concurrency=64
func (p *printer) figure(name, unit string, values []float64, params string) {
	med, lo, hi := summarize(values)
	fmt.Fprintf(p.w, "%-12s %-20s %10s  (%s..%s)  runs=%d %s\n",
		name, unit, format(med), format(lo), format(hi), len(values), params)
}

// summarize returns the median, minimum and maximum of values.
func summarize(values []float64) (median, lo, hi float64) {
	if len(values) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	n := len(s)
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

// format prints a figure with three significant digits at least, and no
// exponent.
func format(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "NaN"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// percentile returns the p-th percentile (0 < p <= 1) of durations by the
// nearest-rank method. It sorts d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(p*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// params formats key=value pairs for a figure line.
func params(kv ...any) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v=%v", kv[i], kv[i+1])
	}
	return b.String()
}
