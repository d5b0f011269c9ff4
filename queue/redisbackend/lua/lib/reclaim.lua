-- Fragment: defines reclaim(deadlines, contact, stream, leases, wake,
-- group, limit, oldLeases, oldHolders), which takes back the leases of
-- the workers found dead: those whose deadline in the set deadlines (the
-- server's clock plus the time they may go without a heartbeat, as their
-- last heartbeat set it) has passed.
--
-- For each dead worker (up to ten a call), the entries its consumer holds
-- in the group's pending list (up to limit) are marked lost (lostMarks,
-- lib/mark_lost.lua): the token of each one's lease in the leases set
-- (lib/token.lua) is replaced by one whose holder is lostHolder of it
-- (lib/lost.lua), which fences the dead worker out of every lease
-- script at once (its token is no longer there), scored by the clock, so
-- that the next fetch takes them over as it takes over an expired lease,
-- and says why the attempt ended ("worker lost", see fetch.lua). A worker whose pending entries are all marked
-- leaves the set deadlines and the set contact (see heartbeat.lua); the
-- registry still lists it, not alive. An entry is added to the wake
-- stream when an entry was marked, so that the waiting fetchers look at
-- once.
--
-- The pending list names a dead worker's entries, not the numbers of
-- their leases, and the leases set is ordered by deadline: the first
-- call that finds a dead worker holding entries reads the whole leases
-- set once (ZRANGE), one command whose cost grows with the number of
-- leases held, paid only when a worker is found dead.
--
-- A lease taken by a version before 2026-12-07 is still in the layout of
-- that version (see lib/legacy.lua): the entry in oldLeases and the
-- lease's number in the hash oldHolders. While oldHolders exists, a dead
-- worker's entry found there is marked lost by moving it, lost, into the
-- leases set.
--
-- An entry a dead worker holds with no token in the leases set was
-- delivered by a fetch script that then failed (a command of it refused,
-- which aborts the script without undoing what it wrote): the worker
-- never got it. It is marked lost as the others, its token numbered by
-- the clock (the lease taken over next is numbered above it, so above
-- any lease it had before, unless the server's clock went back since).
-- Whatever its worker's state (alive, retired: it left the set
-- deadlines, or never beat), such an entry is marked the same way by a
-- sweep of the heartbeats once it has been pending for longer than a
-- lease (see lib/stray.lua); a worker found dead gives it back at once.
--
-- Returns the number of entries marked. It uses clock (lib/clock.lua).
--@include lib/mark_lost.lua
--@include lib/leased.lua
local function reclaim(deadlines, contact, stream, leases, wake, group, limit, oldLeases, oldHolders)
  local dead = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. clock, 'LIMIT', 0, 10)
  local lost = lostMarks(leases, wake)
  local legacy, held
  for _, worker in ipairs(dead) do
    local pending = redis.pcall('XPENDING', stream, group, '-', '+', limit, worker)
    if type(pending) ~= 'table' or pending.err then
      pending = {} -- no stream or group yet: nothing is held
    end
    for _, p in ipairs(pending) do
      local id = p[1]
      if legacy == nil then legacy = redis.call('EXISTS', oldHolders) == 1 end
      local old = legacy and redis.call('HGET', oldHolders, id)
      if old then
        redis.call('ZREM', oldLeases, id)
        redis.call('HDEL', oldHolders, id)
        if not isLost(old) then old = lostHolder(old) end
        lost.mark(id, old)
      else
        if not held then held = leasedEntries(leases) end
        local member = held[id]
        if member then
          local _, holder = untoken(member)
          if holder and not isLost(holder) then
            redis.call('ZREM', leases, member)
            held[id] = lost.mark(id, lostHolder(holder))
          end
        else -- delivered with no lease: its fetch failed (above)
          held[id] = lost.mark(id)
        end
      end
    end
    if #pending < limit then
      redis.call('ZREM', deadlines, worker)
      redis.call('ZREM', contact, worker)
    end
  end
  return lost.wake()
end
