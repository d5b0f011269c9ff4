// Package text cuts strings for error messages and log lines without
// splitting a UTF-8 sequence, for ssehttp, notify, flow/lcflow and its
// tavily tool, and cuts the reports and reasons over a size limit for
// progress and queue.
package text

import "unicode/utf8"

// Clip returns s when it holds at most n bytes, and otherwise the
// longest prefix of s of at most n bytes that ends before a rune (before
// the first byte of a UTF-8 sequence): a valid s gives a valid prefix.
// The caller adds its own mark of the cut ("…", "..."). A negative n
// gives "", as 0 does.
func Clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
