package ssehttp

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMode(t *testing.T) {
	for _, tt := range []struct {
		query string
		want  streamMode
		err   string
	}{
		{"", modeSnapshots, ""},
		{"lastEventId=3", modeSnapshots, ""},
		{"mode=", modeSnapshots, ""},
		{"mode", modeSnapshots, ""},
		{"mode=snapshots", modeSnapshots, ""},
		{"mode=updates", modeUpdates, ""},
		{"mode=updates&lastEventId=7", modeUpdates, ""},
		{"MODE=updates", modeSnapshots, ""}, // not the parameter
		{"mode=Updates", 0, `unknown mode "Updates": want snapshots or updates`},
		{"mode=update", 0, `unknown mode "update"`},
		{"mode=updates%20", 0, `unknown mode "updates "`},
		{"mode=%00", 0, `unknown mode "\x00"`},
		{"mode=updates&mode=snapshots", 0, "mode given 2 times"},
		{"mode=updates&mode=updates", 0, "mode given 2 times"},
		{"mode=" + strings.Repeat("é", 40), 0, `unknown mode "` + strings.Repeat("é", 16) + `..."`},
	} {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			require.NoError(t, err)
			got, err := parseMode(q)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// FuzzParseMode: whatever the query, parseMode accepts exactly the modes
// of the contract, and its error names the mode in a bounded message.
func FuzzParseMode(f *testing.F) {
	for _, seed := range []string{"", "mode=updates", "mode=snapshots", "mode=", "mode=x&mode=y", "mode=%ff", "mode=updates;x", "a=b&mode=updates"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return // the server refuses such a query before the handler
		}
		mode, err := parseMode(q)
		values, given := q["mode"]
		valid := !given || len(values) == 1 && (values[0] == "" || values[0] == ModeSnapshots || values[0] == ModeUpdates)
		if !valid {
			require.Error(t, err, "query %q", raw)
			assert.Less(t, len(err.Error()), 200, "the message quotes a bounded part of the mode")
			return
		}
		require.NoError(t, err, "query %q", raw)
		want := modeSnapshots
		if given && values[0] == ModeUpdates {
			want = modeUpdates
		}
		assert.Equal(t, want, mode)
	})
}
