#!lua
-- append: records the events of one or more Append calls, each all or
-- nothing, in order; calls of several tasks go together when Appends are
-- batched.
--
-- KEYS, per call: task hash, steps list, events list
-- ARGV[1] retention (ms), ARGV[2] number of calls, then, for each call:
--   its task's live channel, the number m of values that follow for the
--   call, and those values (see lib/append.lua), the first of which is
--   the call's append key ("" for none)
--
-- Returns one reply per call, as append of lib/append.lua gives it: the
-- id of the call's last event (the task's last event for a call whose
-- append key is the task's last one, which records nothing), or a
-- NOTFOUND or FINISHED error.
--
-- The shebang (a script with flags, none here; Redis 7) makes a read-only
-- replica refuse the script (READONLY) before it runs. Without it, a
-- replica that lacks the task, as a former primary does while it rejoins
-- after a failover, would answer NOTFOUND, and a worker whose client has
-- not yet followed the failover would stop the run and drop a live task
-- (see gone.go in package queue).
--@include lib/append.lua
local out = {}
local a = 3
for c = 0, tonumber(ARGV[2]) - 1 do
  out[c + 1] = append(KEYS[3 * c + 1], KEYS[3 * c + 2], KEYS[3 * c + 3], ARGV[a], a + 2)
  a = a + 2 + tonumber(ARGV[a + 1])
end
return out
