#!lua
-- retry: removes a held entry and queues its task again: at the end of
-- the stream when it is due already, in the delayed set otherwise; a task
-- due within ARGV[7] ms also adds an entry to the wake stream, so that the
-- fetchers waiting on it look again in time. Given the task's hash, it
-- first records why the attempt ended there (see lib/record_end.lua), so
-- that only the holder of the lease does, and the fetch that reads the
-- task again reads it.
--
-- A task given back for its finish hooks (ARGV[10] "hooks") that goes
-- to the delayed set is also added to the hooks set, for Depth: it has
-- ended, and waits to run its hooks, not its flow.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] delayed set, KEYS[4] wake
--   stream, KEYS[5] hooks set, KEYS[6] (a task of a limited flow only,
--   never one given back for its finish hooks) its flow's gate set, where
--   the task waits for a slot instead (see admit.lua)
-- ARGV[1] entry id, ARGV[2] the lease's number (see lib/token.lua), ARGV[3] consumer group, ARGV[4] task
--   id, ARGV[5] due time (Unix ms), ARGV[6] now (Unix ms), ARGV[7]
--   longest wait of a fetcher (ms), ARGV[8] the task's hash or "" to
--   record nothing there, ARGV[9] why the attempt ended (a
--   queue.AttemptEnd), ARGV[10] "1" if that is a hand-back that is no
--   attempt, "hooks" for queue.EndHooksPending, "" otherwise, ARGV[11]
--   the lease's attempt (queue.Task.Attempt), ARGV[12] "1" if the lease
--   did not run the flow (queue.Lease.NoRun), "" otherwise. The task's
--   hash is on
--   another Cluster slot than the queue's keys: only a client of a
--   single Redis passes it (a Cluster client records the end first, with
--   end_attempt.lua).
--
-- Returns 1, or 0 when the lease is no longer held (then nothing is
-- written).
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/schedule.lua
--@include lib/release.lua
--@include lib/record_end.lua
--@include lib/holder_check.lua
if ARGV[8] ~= '' then
  recordEnd(ARGV[8], ARGV[11], ARGV[9], ARGV[10], ARGV[12])
end
releaseHeld()
schedule(KEYS[1], KEYS[3], KEYS[4], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), KEYS[6])
if ARGV[10] == 'hooks' and not KEYS[6] and tonumber(ARGV[5]) > tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
end
return 1
