-- Fragment: defines reclaim(deadlines, contact, stream, leases, holders,
-- wake, group, limit), which takes back the leases of the workers found
-- dead: those whose deadline in the set deadlines (the server's clock plus
-- the time they may go without a heartbeat, as their last heartbeat set
-- it) has passed.
--
-- For each dead worker (up to ten a call), the entries its consumer holds
-- in the group's pending list (up to limit) are marked lost: their holder
-- becomes lostHolder of it (lib/lost.lua), which fences the dead worker
-- out of every lease script at once (a token never matches it), and their
-- lease deadline becomes the clock, so that the next fetch takes them
-- over as it takes over an expired lease, and says why the attempt ended
-- ("worker lost", see fetch.lua). A worker whose pending entries are all
-- marked leaves the set deadlines and the set contact (see
-- heartbeat.lua); the registry still lists it, not alive. An entry is
-- added to the wake stream when an entry was marked, so that the waiting
-- fetchers look at once.
--
-- Returns the number of entries marked. It uses clock (lib/clock.lua).
--@include lib/lost.lua
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
