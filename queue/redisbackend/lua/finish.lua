#!lua
-- finish: records the last events of tasks and acknowledges their leases,
-- atomically: for each call, the events are appended as append.lua does
-- and then, if they were recorded or the task had ended or is unknown, the
-- lease is released as ack.lua does, when still held.
--
-- KEYS[1] stream, KEYS[2] leases set, then, per call: task hash, steps
--   list, events list
-- ARGV[1] retention (ms), ARGV[2] consumer group, ARGV[3] number of
--   calls, from ARGV[4] the index values of lib/index.lua, then, for each
--   call: its lease's entry id and number (see lib/token.lua), the index score of the state
--   its events move the task to ("" for none), its task's flow and id (see
--   index_add), its task's live channel, the number m of values that
--   follow for the call, and those values (see lib/append.lua), the first
--   of which is the call's append key ("" for none)
--
-- Returns, for each call, {append reply, 1 if the lease was released or
-- 0}. A call whose append key is the task's last (lib/append.lua), made
-- again after its outcome was unknown, records nothing; if its lease is
-- still held it is released, and if the lease's entry is not pending any
-- more (XPENDING, on that path only), the call it repeats released it
-- (or the task has been acknowledged since): the reply is 1 then too, so
-- that its caller does not acknowledge the task again.
--
-- A call whose events are recorded is written into the task index in the
-- same step, on a single Redis (see lib/index.lua); finish.lua runs on a
-- single Redis only.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/append.lua
--@include lib/release.lua
--@include lib/index.lua
local calls = {}
local a = index_init(4)
for c = 1, tonumber(ARGV[3]) do
  calls[c] = a
  a = a + 7 + tonumber(ARGV[a + 6])
end
local out, entries, numbers, at, repeated = {}, {}, {}, {}, {}
for c = 1, #calls do
  local a, k = calls[c], 3 * c - 1
  local r, again = append(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 5], a + 7)
  if type(r) ~= 'table' then
    index_add(ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  end
  local ended = type(r) ~= 'table' or string.find(r.err, '^NOTFOUND') or string.find(r.err, '^FINISHED')
  out[c] = {r, 0}
  if ended then
    entries[#entries + 1], numbers[#entries + 1], at[#entries + 1] = ARGV[a], ARGV[a + 1], c
    repeated[#entries] = again
  end
end
local held = release(KEYS[1], KEYS[2], ARGV[2], entries, numbers)
for j = 1, #entries do
  if held[j] then
    out[at[j]][2] = 1
  elseif repeated[j] then
    local p = redis.pcall('XPENDING', KEYS[1], ARGV[2], entries[j], entries[j], 1)
    if type(p) ~= 'table' or p.err or #p == 0 then out[at[j]][2] = 1 end
  end
end
index_write()
return out
