-- create: records a new task in state PENDING with no events.
--
-- KEYS[1] task hash
-- ARGV[1] time to live (ms), ARGV[2] initial state, ARGV[3] initial status
--
-- Returns 1, or an "EXISTS" error when the task has a snapshot. A queue
-- record already in the hash (Enqueue came first) is kept, its expiry
-- extended if need be. An expired namesake leaves no steps or events
-- behind: the three keys of a task share one expiry time (the hash's
-- field exp, see lib/append.lua), so they expire together, and an expired
-- key reads as missing even before Redis deletes it.
--@include lib/clock.lua
if redis.call('HEXISTS', KEYS[1], 'state') == 1 then
  return redis.error_reply('EXISTS task already exists')
end
local exp = clock + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'progress', '0', 'last', '', 'exp', string.format('%d', exp))
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or ttl < exp - clock then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', exp))
end
return 1
