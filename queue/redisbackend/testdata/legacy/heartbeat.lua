-- heartbeat.lua of the version before the one lease structure (2026-12-07),
-- its fragments expanded: the upgrade tests run it as a worker of that
-- version would (see leaseupgrade_test.go). Not embedded, never run by the backend.
local clock
local function readClock()
  if not clock then
    local time = redis.call('TIME')
    clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return clock
end
readClock()
local function lostHolder(holder)
  return 'lost/' .. holder
end
local function isLost(holder)
  return holder == 'lost' or (holder ~= nil and string.sub(holder, 1, 5) == 'lost/')
end
local function reclaim(deadlines, contact, stream, leases, holders, wake, group, limit)
  local dead = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. clock, 'LIMIT', 0, 10)
  local marked = 0
  for _, worker in ipairs(dead) do
    local pending = redis.pcall('XPENDING', stream, group, '-', '+', limit, worker)
    if type(pending) ~= 'table' or pending.err then
      pending = {} -- no stream or group yet: nothing is held
    end
    for _, p in ipairs(pending) do
      local id = p[1]
      local holder = redis.call('HGET', holders, id)
      if holder and not isLost(holder) then
        redis.call('HSET', holders, id, lostHolder(holder))
        redis.call('ZADD', leases, 'XX', clock, id)
        marked = marked + 1
      end
    end
    if #pending < limit then
      redis.call('ZREM', deadlines, worker)
      redis.call('ZREM', contact, worker)
    end
  end
  if marked > 0 then
    redis.call('XADD', wake, 'MAXLEN', '1', '*', 'w', '1')
  end
  return marked
end
local window = tonumber(ARGV[3])
local last = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
local since
if last and clock - last <= window / 2 then
  since = tonumber(redis.call('ZSCORE', KEYS[8], ARGV[1]))
end
if not since then
  since = clock
  redis.call('ZADD', KEYS[8], clock, ARGV[1])
end
redis.call('ZADD', KEYS[2], clock, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], clock + window, ARGV[1])
local marked = 0
if clock - since >= window then
  marked = reclaim(KEYS[3], KEYS[8], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[4], tonumber(ARGV[5]))
end
return {clock, marked}
