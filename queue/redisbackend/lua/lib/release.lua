-- Fragment: defines release(stream, leases, holders, group, entries),
-- which ends held leases: the entries (a list of ids) leave the consumer
-- group's pending list and the lease bookkeeping, with one command of each
-- kind, and then the stream is trimmed; and releaseHeld(), which runs it
-- on entry ARGV[1] with KEYS[1..3] the stream, leases set and holders hash
-- and ARGV[3] the consumer group.
--
-- Trimming removes the entries older than the oldest one still pending
-- or, with none pending, than the last one delivered: all of them have
-- been acknowledged. It removes whole blocks of entries (XTRIM MINID ~),
-- which costs next to nothing, where deleting each acknowledged entry
-- (XDEL) was the costliest command per task; so the stream keeps up to a
-- block (about a hundred) of acknowledged entries behind the oldest one
-- in use, which XLEN counts.
local function release(stream, leases, holders, group, entries)
  if #entries == 0 then return end
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('ZREM', leases, unpack(entries))
  redis.call('HDEL', holders, unpack(entries))
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
