#!lua
-- extend.lua of the version before the one lease structure (2026-12-07),
-- its fragments expanded: the upgrade tests run it as a worker of that
-- version would (see leaseupgrade_test.go). Not embedded, never run by the backend.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
local clock
local function readClock()
  if not clock then
    local time = redis.call('TIME')
    clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return clock
end
readClock()
redis.call('ZADD', KEYS[2], clock + tonumber(ARGV[3]), ARGV[1])
return 1
