#!lua
-- retry: removes a held entry and queues its task again: at the end of
-- the stream when it is due already, in the delayed set otherwise; a task
-- due within ARGV[7] ms also adds an entry to the wake stream, so that the
-- fetchers waiting on it look again in time.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash, KEYS[4]
--   delayed set, KEYS[5] wake stream, KEYS[6] (a task of a limited flow
--   only) its flow's gate set, where the task waits for a slot instead
--   (see admit.lua)
-- ARGV[1] entry id, ARGV[2] token, ARGV[3] consumer group, ARGV[4] task
--   id, ARGV[5] due time (Unix ms), ARGV[6] now (Unix ms), ARGV[7]
--   longest wait of a fetcher (ms)
--
-- Returns 1, or 0 when the lease is no longer held.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/schedule.lua
--@include lib/release.lua
--@include lib/holder_check.lua
releaseHeld()
schedule(KEYS[1], KEYS[4], KEYS[5], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), KEYS[6])
return 1
