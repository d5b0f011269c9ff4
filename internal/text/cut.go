package text

import "strconv"

// Cut returns s when it holds at most n bytes, and otherwise a prefix of
// s (see Clip) followed by " ... (cut from <len(s)> bytes)", at most n
// bytes in all: the reasons and status lines of tasks (package queue)
// and the reports over a size limit (package progress) are cut so. When
// n is too small for the mark, Cut returns the prefix alone; a
// negative n gives "", as 0 does.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	mark := " ... (cut from " + strconv.Itoa(len(s)) + " bytes)"
	if n < len(mark) {
		return Clip(s, n)
	}
	return Clip(s, n-len(mark)) + mark
}
