#!lua
-- end_attempt: on a Redis Cluster client, records why the attempt of a
-- lease ended, and counts a hand-back that is no attempt, on the task
-- hash ahead of retry.lua (see lib/record_end.lua), whose queue keys are
-- on another slot: retry.lua's check of the lease's holder cannot reach
-- the task hash there, and the task must not be queued again before its
-- record says why (the fetch that leases it next would read the end
-- before). This script checks what the task hash can tell instead: that
-- its attempt is still the lease's (a fetch that took the task over since
-- has counted one more) and that the end of that attempt has not been
-- recorded yet (field prevof, the attempt whose end prev tells: a lease
-- given back once already does not tell its end twice).
--
-- A lease can be lost before a fetch takes it over (an expired lease, a
-- worker found dead, see lib/reclaim.lua): this script then records its
-- end, and retry.lua finds it lost. The fetch that takes the task over
-- sets prev and counted again, before it reads the record; the caller takes the
-- hand-back back.
--
-- KEYS[1] task hash
-- ARGV[1] the lease's attempt, ARGV[2] why it ended (a queue.AttemptEnd),
--   ARGV[3] "1" if that is a hand-back that is no attempt, "hooks" for
--   queue.EndHooksPending, "" otherwise, ARGV[4] "1" if the lease did not
--   run the flow (queue.Lease.NoRun), "" otherwise
--
-- Returns 1 when it recorded the end, 0 when it did not (the attempt is
-- no longer the lease's, its end is recorded already, or the record is
-- gone).
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/record_end.lua
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'prevof')
if cur[1] ~= ARGV[1] or cur[2] == ARGV[1] then
  return 0
end
recordEnd(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
