-- Fragment: defines release(stream, leases, holders, group, entries,
-- tokens), which ends held leases: the entries (a list of ids) leave the
-- consumer group's pending list and the lease bookkeeping, with one
-- command of each kind; tokens are the lease numbers of the entries, which
-- say whether to trim the stream; and releaseHeld(), which runs it on
-- entry ARGV[1] with token ARGV[2], KEYS[1..3] the stream, leases set and
-- holders hash and ARGV[3] the consumer group.
--
-- Trimming removes the entries older than the oldest one still pending
-- or, with none pending, than the last one delivered: all of them have
-- been acknowledged. It removes whole blocks of entries (XTRIM MINID ~),
-- which costs next to nothing, where deleting each acknowledged entry
-- (XDEL) was the costliest command per task. Finding the oldest entry in
-- use takes two commands (XPENDING, and XINFO GROUPS when nothing is
-- pending), which would be most of the cost of releasing a lease if every
-- release trimmed, and a trim can only remove a whole block of about a
-- hundred entries: so a release trims only when one of its leases is
-- numbered a multiple of trimEvery. Lease numbers are handed out one after
-- the other (by the fetch script), so the stream is trimmed about once per
-- trimEvery leases released and keeps up to about two blocks of
-- acknowledged entries behind the oldest one in use, which XLEN counts.
local trimEvery = 100
local function release(stream, leases, holders, group, entries, tokens)
  if #entries == 0 then return end
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('ZREM', leases, unpack(entries))
  redis.call('HDEL', holders, unpack(entries))
  local trim = false
  for i = 1, #tokens do
    if tonumber(tokens[i]) % trimEvery == 0 then trim = true end
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
  release(KEYS[1], KEYS[2], KEYS[3], ARGV[3], {ARGV[1]}, {ARGV[2]})
end
