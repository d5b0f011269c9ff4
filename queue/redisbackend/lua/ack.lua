#!lua flags=allow-oom
-- ack: removes held entries from the queue for good.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash
-- ARGV[1] consumer group, then, for each entry, its id, its token and
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
local ids = {}
for i = 2, #ARGV, 3 do
  ids[#ids + 1] = ARGV[i]
end
local holders = redis.call('HMGET', KEYS[3], unpack(ids))
local out, held = {}, {}
for i = 1, #ids do
  local token, task = ARGV[3 * i], ARGV[3 * i + 1]
  if holders[i] ~= token then
    out[i] = 0
  else
    local state = false
    if task ~= '' then state = redis.call('HGET', task, 'state') end
    if state and state ~= 'SUCCESS' and state ~= 'FAILURE' then
      out[i] = 2
    else
      held[#held + 1] = ids[i]
      out[i] = 1
    end
  end
end
release(KEYS[1], KEYS[2], KEYS[3], ARGV[1], held)
return out
