-- requeue: takes a task out of the dead-letter set and queues another in
-- its place, or does nothing.
--
-- KEYS[1] dead set, KEYS[2] buried hash, KEYS[3] stream, KEYS[4] delayed
--   set, KEYS[5] wake stream, KEYS[6] (a task of a limited flow only) its
--   flow's gate set, where the task waits for a slot instead (see
--   admit.lua)
-- ARGV[1] dead task id, ARGV[2] oldest time still listed (Unix ms),
--   ARGV[3] new task id, ARGV[4] its due time (Unix ms), ARGV[5] now (Unix
--   ms), ARGV[6] longest wait of a fetcher (ms)
--
-- Returns 1, or 0 when the dead task is not in the set.
--@include lib/schedule.lua
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at or tonumber(at) < tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
schedule(KEYS[3], KEYS[4], KEYS[5], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), KEYS[6])
return 1
