-- Fragment: defines takeStrays(stream, leases, wake, group, idle, limit,
-- oldLeases, swept, every), which marks lost the entries pending in the
-- group with no token in the leases set, whatever the state of the
-- consumer that holds them, once they have been pending for longer than
-- idle (ms): up to limit a call. It does nothing while the key swept
-- exists, which it sets for every ms (SET NX PX): of the sweeps of all
-- the processes on the queue, one in every ms does the work.
--
-- A fetch (fetch.lua) delivers entries and puts their tokens in the
-- leases set in one script, so an entry pending with no token is never
-- one whose lease is still being written: it was delivered by a fetch
-- script that failed before its ZADD of the leases (a command of it
-- refused, which aborts the script without undoing what it wrote, as the
-- scoring of a rate's start was, on a Cluster whose slot migrated,
-- before fetch.lua made it a redis.pcall), or by a fetch of a version
-- that leased otherwise. Its worker never got it, and no lease of it
-- will pass; retire.lua keeps the consumer that holds it.
-- Nothing else would run its task again, whether that worker lives, has
-- retired or has died (lib/reclaim.lua marks it as soon as its worker is
-- found dead; this takes it back in every case).
--
-- Each is marked as lib/reclaim.lua marks a dead worker's lease, by
-- lostMarks (lib/mark_lost.lua): a token whose holder is lostHolder
-- (lib/lost.lua) of the clock, which no lease number equals, scored by
-- the clock, so that the next fetch takes it over ("worker lost", see
-- fetch.lua) and numbers its lease above the clock, so above any lease
-- the entry had before (unless the server's clock went back since). An
-- entry is added to the wake stream when one was marked.
--
-- Left alone: every entry with a token in the leases set, whether its
-- lease is held, extended, passed (the next fetch takes it over) or
-- lost; every one in the leases set of the layout before 2026-12-07
-- (oldLeases, see lib/legacy.lua), which moves it into the leases set
-- once it lapses; and every one pending for idle or less. The caller
-- passes its lease for idle: a lease given with the entry would have
-- passed by then. Workers with other leases take such an entry back once
-- it has been pending for longer than the longest, or sooner.
--
-- Counting first. Every pending entry has one token at most, in one of
-- the two sets: a fetch gives each entry it takes one token (it removes
-- a passed lease's before it claims the entry), extend rescores the
-- token it finds, reclaim (lib/reclaim.lua) replaces a live token by a
-- lost one, adoptLapsed (lib/legacy.lua) moves one from oldLeases, this
-- marks only entries with none, and every script that ends a lease (ack,
-- finish, retry, bury) removes its token and acknowledges its entry
-- together. A token with no pending entry (stale: its entry was
-- acknowledged or its group destroyed by some other client) lasts until
-- its lease ends or passes and a fetch takes it over, which drops it. So
-- the entries pending with no token number at least the group's pending
-- count (XPENDING's summary) less the tokens of both sets (ZCARD): when
-- that is 0 or less, which is the rule, the sweep stops there, at a cost
-- that grows with the group's consumers only; a stray hidden by a stale
-- token is found by a sweep after that token has gone. Otherwise it
-- reads the pending list (XPENDING with IDLE, in pages of limit, which
-- scans it) and the whole leases set (one ZRANGE, see lib/leased.lua,
-- whose cost grows with the leases held: BenchmarkSweep), and marks up
-- to that difference (and limit) of entries.
--
-- The cost: a SET; then, once in every ms per queue, an XPENDING summary
-- and two ZCARD; and the reads above only when entries lack a token. The
-- caller runs it seldom (see reclaim.go in Go).
--
-- Returns the number of entries marked. It uses clock (lib/clock.lua).
--@include lib/mark_lost.lua
--@include lib/leased.lua
local function takeStrays(stream, leases, wake, group, idle, limit, oldLeases, swept, every)
  if not redis.call('SET', swept, '1', 'PX', every, 'NX') then
    return 0
  end
  local summary = redis.pcall('XPENDING', stream, group)
  if type(summary) ~= 'table' or summary.err then
    return 0 -- no stream or group yet
  end
  local want = tonumber(summary[1]) - redis.call('ZCARD', leases) - redis.call('ZCARD', oldLeases)
  if want > limit then want = limit end
  local held
  local lost = lostMarks(leases, wake)
  local start = '-'
  while lost.marked < want do
    local page = redis.call('XPENDING', stream, group, 'IDLE', idle, start, '+', limit)
    if #page == 0 then break end -- nothing pending that long
    if not held then held = leasedEntries(leases) end
    for _, p in ipairs(page) do
      local id = p[1]
      if lost.marked < want and not held[id] and not redis.call('ZSCORE', oldLeases, id) then
        lost.mark(id)
      end
    end
    if #page < limit then break end
    start = '(' .. page[#page][1]
  end
  return lost.wake()
end
