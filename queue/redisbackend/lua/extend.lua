#!lua
-- extend: moves the deadline of a held lease to the server's clock plus
-- the lease.
--
-- KEYS[1] stream, KEYS[2] leases set
-- ARGV[1] entry id, ARGV[2] the lease's number (see lib/token.lua),
--   ARGV[3] lease (ms)
--
-- Returns 1, or 0 when the lease is no longer held.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/token.lua
local held = token(ARGV[1], ARGV[2])
if not redis.call('ZSCORE', KEYS[2], held) then
  return 0
end
--@include lib/clock.lua
redis.call('ZADD', KEYS[2], clock + tonumber(ARGV[3]), held)
return 1
