-- heartbeat: records a worker's heartbeat in the queue's worker registry,
-- stamped with the server's clock, and takes back the leases of the
-- workers found dead (see lib/reclaim.lua).
--
-- A worker only judges others when its own previous deadline had not
-- passed: one that was itself cut off (a Redis restart, a network split,
-- a pause) would otherwise find every worker dead that has not beaten
-- again yet. A worker that never beat, or that retired, is not in the
-- deadlines set: its leases wait out their deadline.
--
-- KEYS[1] workers hash, KEYS[2] last-seen set, KEYS[3] deadlines set,
--   KEYS[4] stream, KEYS[5] leases set, KEYS[6] holders hash, KEYS[7] wake
--   stream
-- ARGV[1] worker name, ARGV[2] what the worker says of itself (JSON),
--   ARGV[3] how long it may go without a heartbeat (ms), ARGV[4] consumer
--   group, ARGV[5] most entries to take back per dead worker
--
-- Returns {the server's clock (Unix ms), the number of entries taken back}.
--@include lib/clock.lua
--@include lib/reclaim.lua
local prev = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))
redis.call('ZADD', KEYS[2], clock, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], clock + tonumber(ARGV[3]), ARGV[1])
local marked = 0
if prev and prev >= clock then
  marked = reclaim(KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[4], tonumber(ARGV[5]))
end
return {clock, marked}
