-- caller_admit: checks one start against the limits of its caller, and counts it
-- when it passes (see lib/caller_limits.lua): the path of a start that
-- cannot be checked in create_task.lua (an idempotent start, a Cluster
-- client).
--
-- KEYS[1] the caller's rate key, KEYS[2] the caller's pending set (one
--   hash tag)
-- ARGV[1] starts, ARGV[2] per (ms), ARGV[3] max pending, ARGV[4] how
--   long to keep the pending set (ms), ARGV[5] the task's id
--
-- Returns 1, or the error reply of admit_caller.
--@include lib/clock.lua
--@include lib/caller_limits.lua
local refused = admit_caller(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5], ARGV[4])
if refused then
  return refused
end
return 1
