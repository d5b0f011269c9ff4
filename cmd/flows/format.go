package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// printJSON writes v as indented JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns to c.out; flush it when done.
func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
}

// row writes one row of cells to w.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// ago says how long before now t was, to the coarsest unit that fits:
// "4s ago", "12m ago", "3h ago", "2d ago"; "-" for a zero time, "in 5s"
// for a time to come.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + span(-d)
	}
	if d < time.Second {
		return "just now"
	}
	return span(d) + " ago"
}

// span writes d in its coarsest whole unit.
func span(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// ms writes a latency in milliseconds, with a precision that suits it.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	if v < 10 {
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// clip shortens s to n runes, marking the cut, and puts it on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// stamp writes t as a time of day with milliseconds, in local time, or
// "-".
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

// handBacks writes the runs of a task handed back through no fault of its
// flow (queue.Task.HandBacks), which do not count against its attempts:
// "1 hand-back", "2 hand-backs", or "" for none.
func handBacks(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "1 hand-back"
	}
	return fmt.Sprintf("%d hand-backs", n)
}

// attemptOf writes which run of how many a task is at, the runs it gets
// (queue.Task.Runs) counting one more for each hand-back, which it says
// apart: "3 of 4, 2 hand-backs not counted".
func attemptOf(attempt, runs, backs int) string {
	s := fmt.Sprintf("%d of %d", attempt, runs)
	if backs > 0 {
		s += ", " + handBacks(backs) + " not counted"
	}
	return s
}

// textWriter writes to w what it is given, each control character but
// the line feed (C0 and DEL: an escape sequence's ESC, a carriage
// return) written as the text \xNN, so that what a task holds (its
// status, steps, result, owner), printed for people, cannot move the
// cursor, clear the screen or set the title of the operator's terminal.
type textWriter struct{ w io.Writer }

// control reports whether textWriter writes c as text.
func control(c byte) bool { return c < 0x20 && c != '\n' || c == 0x7f }

func (t textWriter) Write(p []byte) (int, error) {
	if !slices.ContainsFunc(p, control) {
		return t.w.Write(p)
	}
	b := make([]byte, 0, len(p)+16)
	for _, c := range p {
		if control(c) {
			b = fmt.Appendf(b, `\x%02x`, c)
			continue
		}
		b = append(b, c)
	}
	if _, err := t.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
