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
		{in: "1732563000000-0", want: eventID{n: 1732563000000}},
		{in: "1-18446744073709551615", want: eventID{n: 1, k: ^uint64(0)}},
		{in: "3-2-0az9", want: eventID{3, 2, "0az9"}},
		{in: "18446744073709551615-18446744073709551615-zzzz", want: eventID{^uint64(0), ^uint64(0), "zzzz"}},
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
		// Tagged ids: a tag of tagLen digits and lowercase letters, after
		// an element from 1.
		{in: "1-0-", bad: true},
		{in: "1-0-abc", bad: true},
		{in: "1-0-abcde", bad: true},
		{in: "1-0-ABCD", bad: true},
		{in: "1-0-ab_d", bad: true},
		{in: "1-0-ab d", bad: true},
		{in: "1-0-abcd-", bad: true},
		{in: "1-0-ab-d", bad: true},
		{in: "1-0-abcd-0", bad: true},
		{in: "1-0-éabc", bad: true},
		{in: "0-0-abcd", bad: true},
		{in: "1--abcd", bad: true},
		{in: "-0-abcd", bad: true},
		{in: "1-x-abcd", bad: true},
		{in: "1-0--abc", bad: true},
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
	ordered := []eventID{{}, {0, 1, ""}, {1, 0, "abcd"}, {1, 1, ""}, {2, 0, "0000"}, {^uint64(0), ^uint64(0), ""}}
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
	assert.Equal(t, 0, eventID{1, 0, "abcd"}.compare(eventID{1, 0, "zzzz"}), "tags are not compared")
}

// TestEventIDSameAndConflict: an id is the same event as another when
// their positions are, unless both have tags and the tags differ; ids of
// one element with two tags conflict.
func TestEventIDSameAndConflict(t *testing.T) {
	t.Parallel()
	a := eventID{2, 1, "abcd"}
	assert.True(t, a.is(a))
	assert.True(t, a.is(eventID{2, 1, ""}), "an id of an earlier version")
	assert.True(t, eventID{2, 1, ""}.is(a))
	assert.False(t, a.is(eventID{2, 1, "abce"}))
	assert.False(t, a.is(eventID{2, 0, "abcd"}))
	assert.True(t, a.conflicts(eventID{2, 0, "zzzz"}), "the same element, another tag")
	assert.False(t, a.conflicts(eventID{2, 0, "abcd"}))
	assert.False(t, a.conflicts(eventID{2, 0, ""}))
	assert.False(t, a.conflicts(eventID{3, 0, "zzzz"}))
}

// TestElementTag: a tag is tagLen base-36 digits, the same for the same
// element, and differs for elements that differ in one byte.
func TestElementTag(t *testing.T) {
	t.Parallel()
	const element = `{"type":"status","status":"one","at":"2026-12-07T17:00:00.000Z"}`
	tag := elementTag(element)
	assert.True(t, validTag(tag), tag)
	assert.Equal(t, tag, elementTag(element))
	assert.NotEqual(t, tag, elementTag(element[:len(element)-4]+`01Z"}`))
	assert.True(t, validTag(elementTag("")))
	id, err := parseEventID(eventID{7, 0, tag}.String())
	require.NoError(t, err)
	assert.Equal(t, eventID{7, 0, tag}, id)
}

func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"", "0-0", "1732563000000-0", "1-2-3", "-", "9999999999999999999999-1", "1-0-abcd", "0-0-abcd", "1-0-abcd-"} {
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
	for _, bad := range []string{"", "1-0", "1-0/", "/1", "x/1", "1/1", "1-0-abcd/1"} {
		_, _, ok := parseToken(bad)
		assert.False(t, ok, bad)
	}
}
