-- heartbeat: records a worker's heartbeat in the queue's worker registry,
-- stamped with the server's clock.
--
-- KEYS[1] workers hash, KEYS[2] last-seen set
-- ARGV[1] worker name, ARGV[2] what the worker says of itself (JSON)
--
-- Returns the server's clock (Unix ms).
--@include lib/clock.lua
redis.call('ZADD', KEYS[2], clock, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return clock
