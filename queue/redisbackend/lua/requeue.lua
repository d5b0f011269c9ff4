-- requeue: takes a task out of the dead-letter set and queues another in
-- its place, marking the new task's start done in the starting set (see
-- starts.go in Go), or does nothing. The new task's record is written
-- before (with its start in the starting set): a re-queue cut before this
-- script leaves the dead task in the set, and its new task to a sweep.
--
-- KEYS[1] dead set, KEYS[2] buried hash, KEYS[3] stream, KEYS[4] delayed
--   set, KEYS[5] wake stream, KEYS[6] starting set, KEYS[7] (a task of a
--   limited flow only) its flow's gate set, where the task waits for a
--   slot instead (see admit.lua)
-- ARGV[1] dead task id, ARGV[2] oldest time still listed (Unix ms),
--   ARGV[3] new task id, ARGV[4] its due time (Unix ms), ARGV[5] now (Unix
--   ms), ARGV[6] longest wait of a fetcher (ms), ARGV[7] the score of a
--   start done
--
-- Returns 1, or 0 when the dead task is not in the set (then the new
-- task's start is left in the starting set, for the caller to remove once
-- it has deleted the new task's record).
--@include lib/schedule.lua
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at or tonumber(at) < tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
schedule(KEYS[3], KEYS[4], KEYS[5], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), KEYS[7])
redis.call('ZADD', KEYS[6], 'XX', ARGV[7], ARGV[3])
return 1
