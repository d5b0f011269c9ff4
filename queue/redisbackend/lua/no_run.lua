#!lua
-- no_run: counts the lease of an attempt that let its task go without
-- running its flow (queue.Lease.NoRun) on the task hash (see
-- lib/count_no_run.lua), while the record's attempt is still the
-- lease's: a fetch that took the task over since has counted one more,
-- and then the lease is not counted. Ack and Bury send it in their own
-- round trip, after the script that releases the lease: the task hash
-- is on another Cluster slot than the queue's keys, and one script on a
-- single Redis would spare nothing. The lease it counts did not run the
-- flow whether or not the release finds it still held.
--
-- KEYS[1] task hash
-- ARGV[1] the lease's attempt (queue.Task.Attempt)
--
-- Returns 1 when it counted the lease, 0 when it did not (the attempt is
-- no longer the record's, the lease is counted already, or the record is
-- gone).
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/count_no_run.lua
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then
  return 0
end
return countNoRun(KEYS[1], ARGV[1])
