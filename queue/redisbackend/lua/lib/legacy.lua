-- Fragment: defines adoptLapsed(oldLeases, oldHolders, leases, wake,
-- limit), which moves the lapsed leases of the layout before 2026-12-07
-- into the leases set, so that a fetch of this version takes them over.
--
-- Until then a lease was its entry id in the sorted set oldLeases, scored
-- by its deadline, and its number (or a lost one, see lib/lost.lua) in
-- the hash oldHolders. A worker of that version, during a rolling deploy,
-- still takes, extends and ends its leases there, and its fetch takes
-- over the lapsed ones there; it never sees the leases set, whose tokens
-- its fetch could not claim (it would drop them). A lapsed lease of that
-- layout (score <= the clock) leaves it (ZREM, HDEL: its old worker is
-- fenced off, finding no holder) and enters the leases set with its
-- deadline, its token holding the number it had ("0" if none): the next
-- fetch takes it over, numbering its lease above it. Up to limit a call;
-- an entry is added to the wake stream when one moved. Once no worker of
-- that version runs, both keys empty and vanish.
--
-- Returns the number of leases moved; one command when none has lapsed.
-- It uses clock (lib/clock.lua).
--@include lib/token.lua
--@include lib/wake.lua
local function adoptLapsed(oldLeases, oldHolders, leases, wake, limit)
  local lapsed = redis.call('ZRANGEBYSCORE', oldLeases, '-inf', clock, 'WITHSCORES', 'LIMIT', 0, limit)
  if #lapsed == 0 then return 0 end
  local ids, members = {}, {}
  for i = 1, #lapsed, 2 do
    local id = lapsed[i]
    ids[#ids + 1] = id
    members[#members + 1] = lapsed[i + 1]
    members[#members + 1] = token(id, redis.call('HGET', oldHolders, id) or '0')
  end
  redis.call('ZREM', oldLeases, unpack(ids))
  redis.call('HDEL', oldHolders, unpack(ids))
  redis.call('ZADD', leases, unpack(members))
  wakeFetchers(wake)
  return #ids
end
