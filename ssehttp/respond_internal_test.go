package ssehttp

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flowsrun/flows/internal/text"
)

// TestBrief checks how an error message is shortened: each long quoted
// value to its first maxQuote bytes (never half a rune) and "...", the
// text around it kept, and the whole cut at maxErrorLen.
func TestBrief(t *testing.T) {
	long := strings.Repeat("k", 500)
	tests := []struct{ name, in, want string }{
		{"short", `unknown flow: "nope"`, `unknown flow: "nope"`},
		{"long quote", `limit "` + long + `" is not an integer`, `limit "` + long[:maxQuote] + `..." is not an integer`},
		{"two quotes", `a "` + long + `" b "x" c "` + long + `"`, `a "` + long[:maxQuote] + `..." b "x" c "` + long[:maxQuote] + `..."`},
		{"escapes", `key "` + strings.Repeat(`\xff`, 100) + `" twice`, `key "` + strings.Repeat(`\xff`, maxQuote) + `..." twice`},
		{"not half a rune", `flow "a` + strings.Repeat("é", 100) + `"`, `flow "a` + strings.Repeat("é", (maxQuote-1)/2) + `..."`},
		{"unbalanced quote", `he said "` + long, text.Clip(`he said "`+long, maxErrorLen)},
		{"long unquoted", strings.Repeat("word ", 400), text.Clip(strings.Repeat("word ", 400), maxErrorLen-len("...")) + "..."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := brief(tc.in)
			if got != tc.want {
				t.Errorf("brief(%.80q...) = %q, want %q", tc.in, got, tc.want)
			}
			if len(got) > maxErrorLen {
				t.Errorf("brief(%.80q...) is %d bytes long, over %d", tc.in, len(got), maxErrorLen)
			}
		})
	}
}

// FuzzBrief checks that brief never makes a message longer than its
// bounds allow, keeps a short one as it is, and keeps valid UTF-8 valid.
func FuzzBrief(f *testing.F) {
	f.Add(`unknown flow: "` + strings.Repeat("a", 200) + `"`)
	f.Add(`"\"" "` + strings.Repeat(`\u00e9`, 80) + `" "`)
	f.Add(strings.Repeat(`"x`, 700))
	f.Fuzz(func(t *testing.T, msg string) {
		got := brief(msg)
		if len(msg) <= maxQuote && got != msg {
			t.Fatalf("brief(%q) = %q: a short message is kept", msg, got)
		}
		if len(got) > maxErrorLen {
			t.Fatalf("brief(%q) is %d bytes long", msg, len(got))
		}
		if utf8.ValidString(msg) && !utf8.ValidString(got) {
			t.Fatalf("brief(%q) = %q: not valid UTF-8", msg, got)
		}
	})
}
