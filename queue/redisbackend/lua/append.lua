#!lua
-- append: records the events of one or more Append calls, each all or
-- nothing, in order; calls of several tasks go together when Appends are
-- batched.
--
-- KEYS, per call: task hash, steps list, events list
-- ARGV[1] retention (ms), ARGV[2] number of calls, from ARGV[3] the
--   index values of lib/index.lua, then, for each call: the index score of
--   the state its events move the task to ("" for none), its task's flow
--   ("" when unknown) and id (see index_add), its task's live channel, the
--   number m of values that follow for the call, and those values (see
--   lib/append.lua), the first of which is the call's append key ("" for
--   none)
--
-- Returns one reply per call, as append of lib/append.lua gives it: the
-- id of the call's last event (the task's last event for a call whose
-- append key is the task's last one, which records nothing), or a
-- NOTFOUND or FINISHED error. A call whose events are recorded is written
-- into the task index in the same step, on a single Redis (see
-- lib/index.lua).
--
-- The shebang (a script with flags, none here; Redis 7) makes a read-only
-- replica refuse the script (READONLY) before it runs. Without it, a
-- replica that lacks the task, as a former primary does while it rejoins
-- after a failover, would answer NOTFOUND, and a worker whose client has
-- not yet followed the failover would stop the run and drop a live task
-- (see gone.go in package queue).
--@include lib/append.lua
--@include lib/index.lua
local out = {}
local a = index_init(3)
for c = 0, tonumber(ARGV[2]) - 1 do
  local r = append(KEYS[3 * c + 1], KEYS[3 * c + 2], KEYS[3 * c + 3], ARGV[a + 3], a + 5)
  if type(r) ~= 'table' then
    index_add(ARGV[a], ARGV[a + 1], ARGV[a + 2])
  end
  out[c + 1] = r
  a = a + 5 + tonumber(ARGV[a + 4])
end
index_write()
return out
