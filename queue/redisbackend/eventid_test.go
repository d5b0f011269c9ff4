package redisbackend

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
)

func TestParseEventID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want eventID
		bad  bool
	}{
		{in: "", want: eventID{}},
		{in: "0-0", want: eventID{}},
		{in: "1732563000000-0", want: eventID{1732563000000, 0}},
		{in: "1-18446744073709551615", want: eventID{1, ^uint64(0)}},
		{in: "1", bad: true},
		{in: "1-", bad: true},
		{in: "-1", bad: true},
		{in: "1-2-3", bad: true},
		{in: "+1-2", bad: true},
		{in: "1- 2", bad: true},
		{in: "1.5-2", bad: true},
		{in: "18446744073709551616-0", bad: true},
		{in: "x-1", bad: true},
		{in: "bogus", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseEventID(tt.in)
			if tt.bad {
				assert.ErrorIs(t, err, progress.ErrBadEventID)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestEventIDOrder(t *testing.T) {
	t.Parallel()
	ordered := []eventID{{}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {^uint64(0), ^uint64(0)}}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			assert.Equal(t, want, a.compare(b), "%v vs %v", a, b)
		}
	}
	assert.True(t, ordered[len(ordered)-1].isMax())
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"", "0-0", "1732563000000-0", "1-2-3", "-", "9999999999999999999999-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseEventID(s)
		if err != nil {
			assert.ErrorIs(t, err, progress.ErrBadEventID)
			return
		}
		// What parses prints back in canonical form and parses the same.
		again, err := parseEventID(id.String())
		require.NoError(t, err)
		assert.Equal(t, id, again)
	})
}

func TestToken(t *testing.T) {
	t.Parallel()
	entry, n, ok := parseToken(makeToken("1732563000000-3", "42"))
	require.True(t, ok)
	assert.Equal(t, "1732563000000-3", entry)
	assert.Equal(t, "42", n)
	for _, bad := range []string{"", "1-0", "1-0/", "/1", "x/1", "1/1"} {
		_, _, ok := parseToken(bad)
		assert.False(t, ok, bad)
	}
}
