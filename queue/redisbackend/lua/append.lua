-- append: records the events of one or more Append calls, each all or
-- nothing, in order; calls of several tasks go together when Appends are
-- batched.
--
-- KEYS, per call: task hash, steps list, events list
-- ARGV[1] retention (ms), ARGV[2] number of calls, then, for each call:
--   its task's live channel, the number m of values that follow for the
--   call, and those values (see lib/append.lua)
--
-- Returns one reply per call, as append of lib/append.lua gives it: the
-- id of the call's last event, or a NOTFOUND or FINISHED error.
--@include lib/append.lua
local out = {}
local a = 3
for c = 0, tonumber(ARGV[2]) - 1 do
  out[c + 1] = append(KEYS[3 * c + 1], KEYS[3 * c + 2], KEYS[3 * c + 3], ARGV[a], a + 2)
  a = a + 2 + tonumber(ARGV[a + 1])
end
return out
