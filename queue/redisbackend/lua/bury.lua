#!lua
-- bury: releases a held entry as ack.lua does and keeps its task in the
-- dead-letter set, after pruning the entries buried before the retention.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] dead set, KEYS[4] buried
--   hash
-- ARGV[1] entry id, ARGV[2] the lease's number (see lib/token.lua), ARGV[3] consumer group, ARGV[4] task
--   id, ARGV[5] the dead entry's JSON, ARGV[6] now (Unix ms), ARGV[7]
--   retention (ms)
--
-- Returns 1, or 0 when the lease is no longer held.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/release.lua
--@include lib/prune_dead.lua
--@include lib/holder_check.lua
releaseHeld()
local now, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
prune(KEYS[3], KEYS[4], now - retention)
redis.call('ZADD', KEYS[3], now, ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[3], retention)
redis.call('PEXPIRE', KEYS[4], retention)
return 1
