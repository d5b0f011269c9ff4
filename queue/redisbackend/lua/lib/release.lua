-- Fragment: defines release(stream, leases, group, entries, numbers),
-- which ends the leases that are still held among those given (stream
-- entry ids and the numbers of their leases): their tokens leave the
-- leases set (see lib/token.lua) and their entries the consumer group's
-- pending list, with one command of each kind (a ZMSCORE first when there
-- are several); it returns, for each lease, whether it was held.
-- acknowledge(stream, group, entries) is its second half, for entries
-- whose tokens are gone already; releaseHeld() runs it on entry ARGV[1],
-- KEYS[1] being the stream and ARGV[3] the consumer group, after
-- lib/holder_check.lua has removed its token.
--
-- Trimming removes the entries older than the oldest one still pending
-- or, with none pending, than the last one delivered: all of them have
-- been acknowledged. It removes whole blocks of entries (XTRIM MINID ~),
-- which costs next to nothing, where deleting each acknowledged entry
-- (XDEL) was the costliest command per task. Finding the oldest entry in
-- use takes two commands (XPENDING, and XINFO GROUPS when nothing is
-- pending), which would be most of the cost of releasing a lease if every
-- release trimmed, and a trim can only remove a whole block of about a
-- hundred entries: so a release trims only when one of its entries is
-- picked, one in trimEvery, by a hash of its id (SHA-1, so that entries
-- added at a steady pace are not all picked or all passed over, as their
-- ids' times could be by a remainder). The stream is trimmed about once
-- per trimEvery leases released and keeps a few blocks of acknowledged
-- entries behind the oldest one in use, which XLEN counts.
--@include lib/token.lua
local trimEvery = 100
local function picked(entry)
  return tonumber(string.sub(redis.sha1hex(entry), 1, 6), 16) % trimEvery == 0
end
local function acknowledge(stream, group, entries)
  if #entries == 0 then return end
  redis.call('XACK', stream, group, unpack(entries))
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
local function release(stream, leases, group, entries, numbers)
  local held, members = {}, {}
  for i = 1, #entries do
    members[i] = token(entries[i], numbers[i])
  end
  if #members == 0 then return held end
  if #members == 1 then
    held[1] = redis.call('ZREM', leases, members[1]) == 1
  else
    local scores = redis.call('ZMSCORE', leases, unpack(members))
    local gone = {}
    for i = 1, #members do
      held[i] = scores[i] ~= false
      if held[i] then gone[#gone + 1] = members[i] end
    end
    if #gone > 0 then redis.call('ZREM', leases, unpack(gone)) end
  end
  local acked = {}
  for i = 1, #entries do
    if held[i] then acked[#acked + 1] = entries[i] end
  end
  acknowledge(stream, group, acked)
  return held
end
local function releaseHeld()
  acknowledge(KEYS[1], ARGV[3], {ARGV[1]})
end
