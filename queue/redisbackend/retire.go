package redisbackend

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// retireIdle is how long a consumer with no pending entry must have been
// idle for Retire to delete it although it is not the one retiring. It is
// a variable for tests only.
var retireIdle = time.Minute

// retireScript deletes consumers of the group that hold no pending entry:
// the one named, and any other idle for longer than a bound (the leftovers
// of workers that died). A consumer with pending entries is kept whatever
// its name, since deleting it would drop those entries from the group's
// pending list and lose their tasks.
//
//	KEYS[1] stream
//	ARGV[1] consumer group, ARGV[2] consumer retiring, ARGV[3] idle
//	bound (ms)
//
// It returns the number of consumers deleted.
var retireScript = rueidis.NewLuaScript(`
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then
  return 0
end
local deleted = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do
    f[c[i]] = c[i + 1]
  end
  if tonumber(f['pending']) == 0 and (f['name'] == ARGV[2] or tonumber(f['idle']) > tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    deleted = deleted + 1
  end
end
return deleted
`)

// Retire implements queue.Retirer: it deletes the worker's consumer from
// the stream's consumer group unless the worker still holds an entry
// (one it could not hand back, taken over once its lease passes), and with
// it every other consumer that holds nothing and has been idle for a
// minute, left behind by workers that died. A live worker whose consumer
// is deleted gets a new one on its next Fetch, so a consumer is never
// missed. Without Retire, every worker name ever used would stay in the
// group (XINFO CONSUMERS) for good.
func (b *Backend) Retire(ctx context.Context, worker string) error {
	ctx, cancel := b.bound(ctx, 0)
	defer cancel()
	err := retireScript.Exec(ctx, b.client, []string{b.streamKey()},
		[]string{group, worker, strconv.FormatInt(retireIdle.Milliseconds(), 10)}).Error()
	return b.wrap(ctx, "retire worker "+worker, err)
}
