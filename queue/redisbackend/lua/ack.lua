#!lua flags=allow-oom
-- ack: removes held entries from the queue for good.
--
-- KEYS[1] stream, KEYS[2] leases set, KEYS[3] holders hash
-- ARGV[1] consumer group, then, for each entry, its id and token
--
-- Returns, for each entry, 1, or 0 when its lease is no longer held.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/release.lua
local ids = {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local holders = redis.call('HMGET', KEYS[3], unpack(ids))
local out, held = {}, {}
for i = 1, #ids do
  if holders[i] == ARGV[2 * i + 1] then
    held[#held + 1] = ids[i]
    out[i] = 1
  else
    out[i] = 0
  end
end
release(KEYS[1], KEYS[2], KEYS[3], ARGV[1], held)
return out
