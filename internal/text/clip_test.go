package text_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/text"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"short enough", "abc", 3, "abc"},
		{"empty", "", 0, ""},
		{"ascii cut", "abcdef", 4, "abcd"},
		{"cut to nothing", "abc", 0, ""},
		{"inside a two-byte rune", "aé", 2, "a"},     // é is 2 bytes
		{"after a two-byte rune", "aéb", 3, "aé"},    // the cut falls after é
		{"inside a three-byte rune", "ab€", 4, "ab"}, // € is 3 bytes
		{"inside a four-byte rune", "x😀y", 4, "x"},   // 😀 is 4 bytes
		{"a rune at the very start", "😀", 3, ""},
		{"stray continuation bytes: cut before the last start byte", "a\x80\x80b", 2, ""},
		{"negative n", "abc", -1, ""},
		{"negative n, empty string", "", -5, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := text.Clip(tt.s, tt.n)
			assert.Equal(t, tt.want, got)
			assert.LessOrEqual(t, len(got), max(tt.n, 0))
		})
	}
}
