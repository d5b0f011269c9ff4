package redisbackend

import (
	"context"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestRefusedUnrunComparesWholeCode: the replies whose code starts as
// BUSY's does but that are others, of commands Redis ran and answered
// (a consumer group that exists, a key that exists), are not refusals.
func TestRefusedUnrunComparesWholeCode(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().XgroupCreate().Key("s").Group("g").Id("0").Mkstream().Build()).Error())
	dump, err := c.Do(ctx, c.B().Dump().Key("s").Build()).ToString()
	require.NoError(t, err)
	for code, cmd := range map[string]rueidis.Completed{
		"BUSYGROUP": c.B().XgroupCreate().Key("s").Group("g").Id("0").Build(),
		"BUSYKEY":   c.B().Restore().Key("s").Ttl(0).SerializedValue(dump).Build(),
	} {
		err := c.Do(ctx, cmd).Error()
		require.Error(t, err, code)
		assert.Equal(t, code, replyCode(err))
		assert.False(t, refusedUnrun(err), "%s is not a refusal: %v", code, err)
	}
}
