-- Fragment: defines release(stream, leases, holders, group, entries),
-- which ends held leases: the entries (a list of ids) leave the consumer
-- group's pending list and the lease bookkeeping, with one command of each
-- kind; and releaseHeld(), which runs it on entry ARGV[1], KEYS[1..3]
-- being the stream, leases set and holders hash and ARGV[3] the consumer
-- group.
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
