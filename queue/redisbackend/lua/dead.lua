-- dead: lists the dead-letter set, newest first, after pruning it.
--
-- KEYS[1] dead set, KEYS[2] buried hash
-- ARGV[1] oldest time listed (Unix ms), ARGV[2] most entries (0: all)
--
-- Returns {task id, buried at (ms), dead entry JSON or ""} for each entry.
--@include lib/prune_dead.lua
prune(KEYS[1], KEYS[2], ARGV[1])
local ids
if tonumber(ARGV[2]) > 0 then
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
else
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'WITHSCORES')
end
local out = {}
for i = 1, #ids, 2 do
  out[#out + 1] = {ids[i], ids[i + 1], redis.call('HGET', KEYS[2], ids[i]) or ''}
end
return out
