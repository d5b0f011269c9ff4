#!lua
-- finish: records the last events of tasks and acknowledges their leases,
-- atomically: for each call, the events are appended as append.lua does
-- and then, if they were recorded or the task had ended or is unknown, the
-- lease is released as ack.lua does, when still held.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash, then, per
--   call: task hash, steps list, events list
-- ARGV[1] retention (ms), ARGV[2] consumer group, ARGV[3] number of
--   calls, from ARGV[4] the index values of lib/index.lua, then, for each
--   call: its lease's entry id and token, the index score of the state
--   its events move the task to ("" for none), its task's flow and id (see
--   index_add), its task's live channel, the number m of values that
--   follow for the call, and those values (see lib/append.lua), the first
--   of which is the call's append key ("" for none)
--
-- Returns, for each call, {append reply, 1 if the lease was released or
-- 0}. A call whose append key is the task's last (lib/append.lua), made
-- again after its outcome was unknown, records nothing; if its lease is
-- still held it is released, and if the lease's entry has no holder any
-- more, the call it repeats released it (or the task has been
-- acknowledged since): the reply is 1 then too, so that its caller does
-- not acknowledge the task again.
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
local entries = {}
for c = 1, #calls do entries[c] = ARGV[calls[c]] end
local holders = redis.call('HMGET', KEYS[3], unpack(entries))
local out, held = {}, {}
for c = 1, #calls do
  local a, k = calls[c], 3 * c
  local r, again = append(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 5], a + 7)
  if type(r) ~= 'table' then
    index_add(ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  end
  local ended = type(r) ~= 'table' or string.find(r.err, '^NOTFOUND') or string.find(r.err, '^FINISHED')
  local acked = 0
  if ended and holders[c] == ARGV[a + 1] then
    held[#held + 1] = entries[c]
    acked = 1
  elseif again and not holders[c] then
    acked = 1
  end
  out[c] = {r, acked}
end
release(KEYS[1], KEYS[2], KEYS[3], ARGV[2], held)
index_write()
return out
