#!lua flags=allow-oom
-- ack.lua of the version before the one lease structure (2026-12-07),
-- its fragments expanded: the upgrade tests run it as a worker of that
-- version would (see leaseupgrade_test.go). Not embedded, never run by the backend.
local trimEvery = 100
local function picked(entry)
  return tonumber(string.sub(redis.sha1hex(entry), 1, 6), 16) % trimEvery == 0
end
local function release(stream, leases, holders, group, entries)
  if #entries == 0 then return end
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('ZREM', leases, unpack(entries))
  redis.call('HDEL', holders, unpack(entries))
  local trim = false
  for i = 1, #entries do
    if picked(entries[i]) then trim = true end
  end
  if not trim then return end
  local pending = redis.call('XPENDING', stream, group)
  local floor = pending[2]
  if tonumber(pending[1]) == 0 then
    floor = nil
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      if g[2] == group then
        for i = 1, #g, 2 do
          if g[i] == 'last-delivered-id' then floor = g[i + 1] end
        end
      end
    end
  end
  if floor then
    redis.call('XTRIM', stream, 'MINID', '~', floor)
  end
end
local function releaseHeld()
  release(KEYS[1], KEYS[2], KEYS[3], ARGV[3], {ARGV[1]})
end
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
