package redisbackend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestAppendOnlyWriteErrorRefusesWrites pins the other MISCONF, on a
// real server whose writes to its append-only file fail (the file it
// opens after a rewrite is /dev/full, which is out of space): it refuses
// every write, as for a failed RDB save, with a reply that names the AOF,
// so that the error says what to mend, and it answers reads. Once a write
// to the file succeeds (a rewrite opens a file of its own), writes are
// taken again. /dev/full is Linux's.
func TestAppendOnlyWriteErrorRefusesWrites(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	c := srv.Client(t)
	ctx := context.Background()
	set := func(key string) error { return c.Do(ctx, c.B().Set().Key(key).Value("v").Build()).Error() }
	require.NoError(t, set("k"))
	dir := filepath.Join(srv.Dir(), "appendonlydir")
	_, err := os.Stat(filepath.Join(dir, "appendonly.aof.1.incr.aof"))
	require.NoError(t, err, "Redis 7's multi-part AOF")
	next := filepath.Join(dir, "appendonly.aof.2.incr.aof")
	require.NoError(t, os.Symlink("/dev/full", next))
	waitInfo := func(field string) {
		t.Helper()
		require.Eventually(t, func() bool {
			info, err := srv.Do("INFO", "persistence").ToString()
			return err == nil && strings.Contains(info, "aof_rewrite_in_progress:0\r\n") && strings.Contains(info, field+"\r\n")
		}, redistest.ClusterTimeout, 10*time.Millisecond, "INFO persistence never showed "+field)
	}
	require.NoError(t, srv.Do("BGREWRITEAOF").Error())
	waitInfo("aof_rewrites:1")
	// Redis takes the write that its flush to the file fails on, after
	// answering it, and refuses the writes after.
	require.NoError(t, set("taken"))
	waitInfo("aof_last_write_status:err")

	err = set("a")
	assert.Equal(t, "MISCONF", replyCode(err), "%v", err)
	assert.ErrorContains(t, err, "MISCONF Errors writing to the AOF file")
	assert.True(t, refusedUnrun(err))
	assert.Contains(t, refusalAdvice(err), "append-only file")
	err = c.Do(ctx, c.B().Eval().Script("redis.call('DEL', 'k'); return 1").Numkeys(0).Build()).Error()
	assert.Equal(t, "MISCONF", replyCode(err), "a script without flags, at its first write: %v", err)
	n, err := c.Do(ctx, c.B().Exists().Key("k", "a").Build()).AsInt64()
	assert.NoError(t, err, "a read")
	assert.Equal(t, int64(1), n, "the refused writes wrote nothing")

	require.NoError(t, os.Remove(next))
	require.NoError(t, srv.Do("BGREWRITEAOF").Error())
	waitInfo("aof_rewrites:2")
	waitInfo("aof_last_write_status:ok")
	assert.NoError(t, set("a"), "a write to the file succeeded: writes are taken again")
}
