package redistrips_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
)

func TestClientCountsRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		countDedicated bool
		record         bool
		trips          int64 // the round trips of the operations below
	}{
		{"shared connections", false, false, 3},
		{"dedicated ones too", true, false, 5},
		{"recorded", true, true, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &redistrips.Client{Client: srv.Client(t), CountDedicated: tc.countDedicated, Record: tc.record}
			require.NoError(t, c.Do(ctx, c.B().Set().Key("a").Value("1").Build()).Error())
			assert.Len(t, c.DoMulti(ctx, c.B().Get().Key("a").Build(), c.B().Get().Key("b").Build()), 2)
			assert.Empty(t, c.DoMulti(ctx), "a DoMulti of no command")
			require.NoError(t, c.DoCache(ctx, c.B().Get().Key("a").Cache(), 0).Error())
			dc, release := c.Dedicate()
			require.NoError(t, dc.Do(ctx, dc.B().Ping().Build()).Error())
			dc.DoMulti(ctx, dc.B().Ping().Build(), dc.B().Ping().Build())
			release()

			assert.Equal(t, tc.trips, c.Trips())
			if !tc.record {
				assert.Empty(t, c.Recorded(0))
				return
			}
			assert.Equal(t, [][]string{{"SET a 1"}, {"GET a", "GET b"}, {"GET a"}, {"PING"}, {"PING", "PING"}}, c.Recorded(0))
			assert.Equal(t, [][]string{{"PING"}, {"PING", "PING"}}, c.Recorded(3), "from a mark")
			assert.Equal(t, [][]string{{"SET a 1"}, {"GET a", "GET b"}, {"GET a"}}, c.Naming(0, " a"))
			assert.Equal(t, [][]string{{"GET a", "GET b"}}, c.Naming(1, "b"))
		})
	}
}
