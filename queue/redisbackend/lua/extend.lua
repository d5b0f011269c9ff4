#!lua
-- extend: moves the deadline of a held lease to the server's clock plus
-- the lease.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash
-- ARGV[1] entry id, ARGV[2] token, ARGV[3] lease (ms)
--
-- Returns 1, or 0 when the lease is no longer held.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/holder_check.lua
--@include lib/clock.lua
redis.call('ZADD', KEYS[2], clock + tonumber(ARGV[3]), ARGV[1])
return 1
