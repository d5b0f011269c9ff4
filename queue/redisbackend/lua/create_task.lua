-- create_task: records new tasks' progress as PENDING with no events, as
-- create.lua does, together with their queue records, and adds the tasks
-- that are due to the stream.
--
-- KEYS, per task: task hash
-- ARGV[1] initial state, ARGV[2] initial status, ARGV[3] the stream, then,
--   for each task: the time to live of its hash (ms), its id if the script
--   is to add it to the stream or "", the number of record values k, and
--   k values: the record's fields and values
--
-- Returns, for each task, 1, or an "EXISTS" error when it has a snapshot
-- (then nothing of that task is written). A record without a snapshot
-- (left by Enqueue under the same id) is replaced. The stream is a key of
-- another Cluster slot: a Cluster client queues its tasks itself.
--@include lib/clock.lua
local out = {}
local a = 4
for t = 1, #KEYS do
  local task = KEYS[t]
  local ttl, queued, k = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local found = redis.call('EXISTS', task) == 1
  if found and redis.call('HEXISTS', task, 'state') == 1 then
    out[t] = redis.error_reply('EXISTS task already exists')
  else
    if found then
      redis.call('DEL', task)
    end
    local exp = string.format('%d', clock + tonumber(ttl))
    redis.call('HSET', task, 'state', ARGV[1], 'status', ARGV[2], 'progress', '0', 'last', '', 'exp', exp, unpack(ARGV, a + 3, a + 2 + k))
    redis.call('PEXPIREAT', task, exp)
    if queued ~= '' then
      redis.call('XADD', ARGV[3], '*', 'task', queued)
    end
    out[t] = 1
  end
  a = a + 3 + k
end
return out
