#!lua
-- fetch.lua of the version before the one lease structure (2026-12-07),
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
local stream, delayed, leases, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, max, leasems = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local quickUntil = tonumber(ARGV[9])
local quick = quickUntil ~= nil and clock < quickUntil - math.floor(tonumber(ARGV[10]) / 4)

local nextDue, nextExpiry = {}, {}
if not quick then
  nextDue = redis.call('ZRANGE', delayed, '0', '0', 'WITHSCORES')
end
if #nextDue > 0 and tonumber(nextDue[2]) <= clock then
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', clock, 'LIMIT', 0, ARGV[5])
  redis.call('ZREM', delayed, unpack(due))
  redis.call('ZREM', KEYS[6], unpack(due))
  for i = 1, #due do
    redis.call('XADD', stream, '*', 'task', due[i])
  end
  nextDue = nil
end

local taken, ended, before = {}, {}, {}
if not quick then
  nextExpiry = redis.call('ZRANGE', leases, '0', '0', 'WITHSCORES')
end
if #nextExpiry > 0 and tonumber(nextExpiry[2]) <= clock then
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', clock, 'LIMIT', 0, max)
  for i = 1, #expired do
    local holder = redis.call('HGET', holders, expired[i])
    local claimed = redis.pcall('XCLAIM', stream, group, consumer, 0, expired[i])
    if claimed.err or #claimed == 0 then
      redis.call('ZREM', leases, expired[i])
      redis.call('HDEL', holders, expired[i])
    else
      taken[#taken + 1] = claimed[1]
      ended[#taken] = isLost(holder) and 'worker lost' or 'lease expired'
      if holder then
        before[#taken] = tonumber(string.match(holder, '(%d+)$'))
      end
    end
  end
  nextExpiry = nil
end

local drained, lastID = false, nil
if #taken < max then
  local want = max - #taken
  local count = ARGV[3]
  if #taken > 0 then count = string.format('%d', want) end
  local read = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  if type(read) == 'table' and read.err then
    if not string.find(read.err, 'NOGROUP') then
      return redis.error_reply(read.err)
    end
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  end
  local entries = {}
  if read then entries = read[1][2] end
  for i = 1, #entries do
    taken[#taken + 1] = entries[i]
  end
  drained = #entries < want
  if #entries > 0 then lastID = entries[#entries][1] end
end

local out = {}
if #taken > 0 then
  local tokens, deadlines = {}, {}
  local deadline = string.format('%d', clock + leasems)
  for i = 1, #taken do
    local n = clock
    if before[i] and before[i] >= n then n = before[i] + 1 end
    local id, token = taken[i][1], string.format('%d', n)
    tokens[2 * i - 1], tokens[2 * i] = id, token
    deadlines[2 * i - 1], deadlines[2 * i] = deadline, id
    out[i] = {id, taken[i][2], token, ended[i] or ''}
  end
  redis.call('HSET', holders, unpack(tokens))
  redis.call('ZADD', leases, unpack(deadlines))
  local prefix, retention = ARGV[6], tonumber(ARGV[7])
  if prefix ~= '' then
    for i = 1, #out do
      local fields, id = out[i][2], nil
      for f = 1, #fields - 1, 2 do
        if fields[f] == 'task' then id = fields[f + 1] end
      end
      if id and #id <= 64 and not string.find(id, '[^%w_%-]') then
        local key = prefix .. ':{' .. id .. '}:task'
        local rec = redis.call('HMGET', key, 'exp', unpack(ARGV, 11))
        local exp = tonumber(table.remove(rec, 1))
        if rec[1] then
          rec[2] = string.format('%d', redis.call('HINCRBY', key, 'attempt', '1'))
          if ended[i] then
            redis.call('HSET', key, 'prev', ended[i], 'counted', ended[i])
            rec[5], rec[10] = ended[i], ended[i]
          end
          if not exp or exp - clock < retention then
            redis.call('PEXPIRE', key, ARGV[7], 'GT')
          end
        end
        out[i][5] = rec
      end
    end
  end
end
if not drained then
  return {out, -1, -1, '', '', ''}
end

local function newest(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', '1')
  if #last > 0 then return last[1][1] end
  return '0-0'
end
if quick then
  local expiresIn = -1
  if #out > 0 then
    expiresIn = leasems
    quickUntil = math.min(quickUntil, clock + leasems)
  end
  return {out, quickUntil - clock, expiresIn, lastID or '+', '', string.format('%d', quickUntil)}
end
if not nextDue then nextDue = redis.call('ZRANGE', delayed, '0', '0', 'WITHSCORES') end
local dueIn = -1
if #nextDue > 0 then dueIn = math.max(tonumber(nextDue[2]) - clock, 0) end
local expiresIn = -1
if not nextExpiry then
  nextExpiry = redis.call('ZRANGE', leases, '0', '0', 'WITHSCORES')
elseif #out > 0 then
  expiresIn = leasems
end
if #nextExpiry > 0 then
  local e = math.max(tonumber(nextExpiry[2]) - clock, 0)
  if expiresIn < 0 or e < expiresIn then expiresIn = e end
end
local lastWake = ''
if #out == 0 or ARGV[8] ~= '' then lastWake = newest(KEYS[5]) end
local checkIn = tonumber(ARGV[10])
if dueIn >= 0 and dueIn < checkIn then checkIn = dueIn end
if expiresIn >= 0 and expiresIn < checkIn then checkIn = expiresIn end
return {out, dueIn, expiresIn, lastID or newest(stream), lastWake, string.format('%d', clock + checkIn)}
