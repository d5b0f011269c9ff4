#!lua flags=allow-oom
-- ack: removes held entries from the queue for good.
--
-- KEYS[1] stream, KEYS[2] leases set
-- ARGV[1] consumer group, then, for each entry, its id, its lease's
--   number (see lib/token.lua) and
--   its task's hash or "": given a hash, the entry is released only if
--   the task has ended here or has no progress record (the hash is gone,
--   or holds no state: another store keeps the progress). Durable mode
--   passes it: an acknowledgement decided on what another server said (a
--   former primary rejoining as a replica, or one that died with the
--   task's end) must not delete the entry of a task that has not ended
--   on this one.
--
-- Returns, for each entry, 1, 0 when its lease is no longer held, or 2
-- when it is held but its task has not ended (the entry stays held, and
-- is taken over once its lease passes).
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/release.lua
local out, entries, numbers, at = {}, {}, {}, {}
for i = 1, (#ARGV - 1) / 3 do
  local entry, number, task = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local state = false
  if task ~= '' then state = redis.call('HGET', task, 'state') end
  if state and state ~= 'SUCCESS' and state ~= 'FAILURE' then
    out[i] = 0
    if redis.call('ZSCORE', KEYS[2], token(entry, number)) then out[i] = 2 end
  else
    entries[#entries + 1], numbers[#entries + 1], at[#entries + 1] = entry, number, i
  end
end
local held = release(KEYS[1], KEYS[2], ARGV[1], entries, numbers)
for j = 1, #entries do
  out[at[j]] = held[j] and 1 or 0
end
return out
