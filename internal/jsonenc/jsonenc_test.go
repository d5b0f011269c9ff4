package jsonenc

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tricky strings: every escape encoding/json makes.
var tricky = []string{
	"", "plain", `quote " and backslash \`, "tab\tnewline\ncr\rbs\bff\f",
	"nul\x00 esc\x1b del\x7f", "<script>&amp;</script>", "line\u2028para\u2029",
	"invalid \xff\xfe utf-8", "truncated \xe2\x82", "héllo wörld ✓ 😀",
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range tricky {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(AppendString(nil, s)), "%q", s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(AppendString(nil, s)))
	})
}
