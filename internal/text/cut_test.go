package text_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/text"
)

func TestCut(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"short enough", "abc", 3, "abc"},
		{"empty", "", 0, ""},
		{"cut with its mark", long, 40, strings.Repeat("x", 15) + " ... (cut from 100 bytes)"},
		{"no room for the mark", long, 24, strings.Repeat("x", 24)},
		{"exactly the mark", long, 25, " ... (cut from 100 bytes)"},
		{"inside a rune", "é" + long, 26, " ... (cut from 102 bytes)"},
		{"negative n", "abc", -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := text.Cut(tt.s, tt.n)
			assert.Equal(t, tt.want, got)
			assert.LessOrEqual(t, len(got), max(tt.n, 0))
		})
	}
}
