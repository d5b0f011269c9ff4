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

// TestOutOfMemoryRefusesBeforeAnyWrite pins the Redis semantics that
// refusedUnrun counts on for OOM, on a real server past its maxmemory
// (policy noeviction): a script without flags is refused at its first
// write that may grow memory, having written nothing, and never after a
// write (its later writes then run); a script with flags is refused
// whole unless it says allow-oom, and one that says no-writes runs; a
// MULTI/EXEC is refused whole at EXEC, reads and all.
func TestOutOfMemoryRefusesBeforeAnyWrite(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
	require.NoError(t, srv.Do("CONFIG", "SET", "maxmemory-policy", "noeviction").Error())
	require.NoError(t, srv.Do("CONFIG", "SET", "maxmemory", "1").Error())
	t.Cleanup(func() { require.NoError(t, srv.Do("CONFIG", "SET", "maxmemory", "0").Error()) })
	eval := func(src string) error {
		return c.Do(ctx, c.B().Eval().Script(src+"\nreturn 1").Numkeys(0).Build()).Error()
	}
	exists := func(key string) bool {
		n, err := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64()
		require.NoError(t, err)
		return n == 1
	}

	err := eval("redis.call('HSET', 'h', 'f', 'v'); redis.call('SET', 'a', 'v')")
	assert.Equal(t, "OOM", replyCode(err), "%v", err)
	assert.True(t, refusedUnrun(err))
	assert.False(t, exists("h") || exists("a"), "the refused script wrote nothing")

	err = eval("redis.call('DEL', 'k'); redis.call('SET', 'b', 'v')")
	assert.NoError(t, err, "a script that has written is not refused after")
	assert.True(t, exists("b"))

	err = eval("#!lua\nredis.call('ZREM', 'z', 'm')")
	assert.Equal(t, "OOM", replyCode(err), "a script with flags is refused whole: %v", err)
	assert.NoError(t, eval("#!lua flags=allow-oom\nredis.call('ZREM', 'z', 'm')"))
	assert.NoError(t, eval("#!lua flags=no-writes\nredis.call('GET', 'b')"))

	res := c.DoMulti(ctx, c.B().Multi().Build(), c.B().Get().Key("b").Build(), c.B().Exec().Build())
	assert.Equal(t, "OOM", replyCode(res[1].Error()), "a read queued in a MULTI is refused")
	assert.Equal(t, "EXECABORT", replyCode(res[2].Error()))
}

// TestDiskErrorRefusesBeforeAnyWrite pins the Redis semantics that
// refusedUnrun counts on for MISCONF, on a real server whose last RDB
// save failed (stop-writes-on-bgsave-error yes, the default): every
// command that writes is refused whole, PING too, and reads are answered;
// a script without flags is refused at its first write, having written
// nothing, whatever the write (a deletion too, unlike OOM); a script with
// flags is refused whole unless it says no-writes (allow-oom does not
// help); a MULTI/EXEC that holds a write is refused whole at EXEC, and
// one of reads only runs. Once a save succeeds, writes are taken again.
func TestDiskErrorRefusesBeforeAnyWrite(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	require.NoError(t, c.Do(ctx, c.B().Set().Key("k").Value("v").Build()).Error())
	require.NoError(t, c.Do(ctx, c.B().XgroupCreate().Key("s").Group("g").Id("0").Mkstream().Build()).Error())
	repair := srv.FailSaves(t)
	eval := func(src string) error {
		return c.Do(ctx, c.B().Eval().Script(src+"\nreturn 1").Numkeys(0).Build()).Error()
	}
	exists := func(key string) bool {
		n, err := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64()
		require.NoError(t, err)
		return n == 1
	}
	misconf := func(err error, what string) {
		t.Helper()
		assert.Equal(t, "MISCONF", replyCode(err), "%s: %v", what, err)
		assert.True(t, refusedUnrun(err), "%s", what)
	}

	err := c.Do(ctx, c.B().Set().Key("a").Value("v").Build()).Error()
	misconf(err, "a single write")
	assert.ErrorContains(t, err, "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk")
	misconf(c.Do(ctx, c.B().Del().Key("k").Build()).Error(), "a deletion")
	misconf(c.Do(ctx, c.B().Xreadgroup().Group("g", "w").Count(1).Streams().Key("s").Id(">").Build()).Error(), "XREADGROUP")
	misconf(c.Do(ctx, c.B().Ping().Build()).Error(), "PING")
	got, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString()
	assert.NoError(t, err, "a read")
	assert.Equal(t, "v", got)

	misconf(eval("redis.call('HSET', 'h', 'f', 'v'); redis.call('SET', 'a', 'v')"), "a script without flags")
	assert.False(t, exists("h") || exists("a"), "the refused script wrote nothing")
	misconf(eval("redis.call('DEL', 'k'); redis.call('SET', 'b', 'v')"), "a script without flags that deletes first")
	assert.True(t, exists("k"), "the refused deletion deleted nothing")
	assert.False(t, exists("b"))
	assert.NoError(t, eval("redis.call('GET', 'k')"), "a script without flags that only reads")

	misconf(eval("#!lua\nredis.call('GET', 'k')"), "a script with flags is refused whole, before it runs")
	misconf(eval("#!lua flags=allow-oom\nredis.call('ZREM', 'z', 'm')"), "allow-oom is no way around it")
	assert.NoError(t, eval("#!lua flags=no-writes\nredis.call('GET', 'k')"))

	res := c.DoMulti(ctx, c.B().Multi().Build(), c.B().Get().Key("k").Build(), c.B().Set().Key("c").Value("v").Build(), c.B().Exec().Build())
	assert.NoError(t, res[1].Error(), "a read is queued")
	misconf(res[2].Error(), "a write queued in a MULTI")
	assert.Equal(t, "EXECABORT", replyCode(res[3].Error()), "the transaction is refused whole")
	assert.False(t, exists("c"))
	res = c.DoMulti(ctx, c.B().Multi().Build(), c.B().Get().Key("k").Build(), c.B().Exec().Build())
	assert.NoError(t, res[2].Error(), "a transaction of reads runs")

	repair()
	assert.NoError(t, c.Do(ctx, c.B().Set().Key("a").Value("v").Build()).Error(), "a save succeeded: writes are taken again")
	assert.NoError(t, eval("#!lua\nredis.call('SET', 'b', 'v')"))
}
