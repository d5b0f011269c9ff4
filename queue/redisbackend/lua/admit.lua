-- admit: lets waiting tasks of limited flows start (see limit.go): for
-- each flow, first adds the tasks given to its gate, then frees the slots
-- whose tasks have let go of their lease, then moves the tasks of its
-- gate that are due, oldest due first, to the end of the stream, as many
-- as its free slots and its rate allow; each takes a slot, and a start
-- of the rate's window (below).
--
-- A slot is named by the stream entry its task was given. It is held
-- while that entry is in the consumer group's pending list (leased,
-- including a lease taken back from a dead worker until a fetch takes it
-- over: the task keeps its slot for its next attempt; XPENDING of that
-- one entry, O(log n)) or has not been delivered to the consumer group
-- yet; an entry acknowledged, buried or given back (Retry) frees it. So
-- a slot is never a count that a crash could leave wrong: it lives as
-- long as its task's lease.
--
-- A start of a flow's rate is named by the stream entry too, in the
-- flow's starts set. A task let through is not running yet: it may wait
-- for a worker for long (none running, all busy). So its start is scored
-- not started: 2^52 plus the time (ms) of its entry's id, above any
-- time, so that no window leaves it, and in the order of the entries,
-- so that the ones delivered are a range of scores (below); and its
-- entry carries the field "rate" with the flow's name, by which the
-- fetch that leases it scores its start with the lease's time
-- (fetch.lua); from then on the start leaves the window per after it. A
-- flow's tasks are let through only while fewer than its rate are in the
-- set: so no window of per holds more leases of them than the rate,
-- however long they waited for a worker. A lease taken over from a dead
-- worker keeps the start of the first (the fetch only lowers a score); a
-- retry is let through again and takes a start of its own. A start not
-- started whose entry has been delivered was leased by a fetch that did
-- not score it (one of a version before 2026-12-07, or one whose scoring
-- failed): it is scored with the clock here, later than its lease, which
-- holds it in the window longer, never shorter.
-- Those are the starts not started scored up to 2^52 plus the time of
-- the last entry delivered (the consumer group's last-delivered-id),
-- less those of that millisecond after it: one ZRANGEBYSCORE finds them,
-- however many starts wait not started behind them (a backlog of up to
-- the rate, which a loop over them all would read at each admit).
-- The set expires per after its last start while it holds none not
-- started, and while it does, ARGV[4] (twice the retention) or per,
-- whichever is longer, after the last admit of the flow with its rate:
-- each admit renews it, and every worker with the flow's rate in its
-- registry admits once a second at least. So the set of a flow whose
-- rate is removed (no admit names the flow with a rate again; a fetch's
-- scoring does not renew it) expires, and holds no starts not started
-- for ever. A task let through waits in the stream at most the
-- retention (which Config.Retention asks to exceed the longest wait in
-- the queue; its record expires after), so the set outlives every
-- start that can still be leased, unless tasks let through wait longer
-- while no worker of the flow's rate runs: then up to rate of their
-- starts go uncounted.
--
-- A slot set expires ARGV[4] (twice the retention) after the last admit
-- of the flow with its concurrency that found it holding slots: each
-- such admit renews it, and every worker with the flow's concurrency in
-- its registry admits once a second at least. So the set of a flow
-- whose concurrency limit is removed, or which no worker registers any
-- more, does not keep its members for ever. Only a task leased longer
-- than that while no worker with the limit runs loses its slot so, and
-- then only to workers that come with the limit again.
--
-- A flow named with neither a concurrency nor a rate (0 and 0) has no
-- limits now (a deploy removed them; see README, Limits): its gate is
-- drained, every task in it let through at once, as far as ARGV[2]
-- allows: a due one to the end of the stream, one due later to the
-- delayed set (the wake stream told), taking no slot and no start of a
-- rate; and its slots set loses the slots whose tasks have let go of
-- their lease, which a worker that still has the limit would do too.
-- What a worker with the old limits admits meanwhile keeps its slots and
-- starts; only the tasks drained run beyond its limits.
--
-- A task added to its gate is queued: if its start is in the queue's
-- starting set (see starts.go in Go), the script marks it done there, with
-- the same score as the starts that queue their tasks elsewhere, in the
-- same step as the gate's ZADD, so that no cut between two commands can
-- leave a task in its gate whose start a sweep would end, nor one marked
-- done and not in its gate.
--
-- KEYS[1] stream, KEYS[2] starting set, KEYS[3] delayed set, KEYS[4]
--   wake stream, then for each flow its gate set, slots set and starts
--   set
-- ARGV[1] consumer group, ARGV[2] most tasks to move per flow, ARGV[3]
--   the score of a start done, ARGV[4] how long (ms) a starts set that
--   holds starts not started, or a slots set, lives at least (above),
--   then for each
--   flow: its concurrency (0 for
--   none), its rate (0 for none), the rate's period (ms), its name, the
--   number n of tasks to add, and n pairs of task id and due time (Unix
--   ms)
--
-- Returns {moved, wait}: the number of tasks let out of the gates, and the
-- time in ms until something changes without a slot being freed or a
-- task let through being leased (a rate's window moves on, a task of a
-- gate falls due, or more may move at once: 0), -1 for never.
--@include lib/clock.lua
--@include lib/wake.lua
local stream, starting, delayed, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, most = ARGV[1], tonumber(ARGV[2])

local delivered
local function lastDelivered()
  if delivered then return delivered end
  delivered = '0-0'
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      if g[2] == group then
        for i = 1, #g, 2 do
          if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
        end
      end
    end
  end
  return delivered
end

-- notStarted is the score of a start not started, less the time of its
-- entry's id: 2^52 ms, beyond any clock, and the sum still exact.
local notStarted = 2 ^ 52
local function idTime(e)
  return tonumber(string.match(e, '^(%d+)-'))
end
local function score(n)
  return string.format('%d', n)
end

local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end

local wait = -1
local function soonest(ms)
  ms = math.max(ms, 0)
  if wait < 0 or ms < wait then wait = ms end
end

local function pending(e)
  local p = redis.pcall('XPENDING', stream, group, e, e, 1)
  return type(p) == 'table' and not p.err and #p > 0
end
-- live reports whether the stream entry e holds its slot (above).
local function live(e)
  return pending(e) or after(e, lastDelivered())
end

-- drain lets every task of a flow without limits out of its gate, as
-- many as most: a task due to the end of the stream, one due later to
-- the delayed set (waking the fetchers, who look at it then), neither
-- taking a slot or a start; and forgets the slots whose tasks have let
-- go of their lease (the set goes with the last). It is what becomes of
-- the gate of a flow whose limits a deploy removed (see Limit in Go).
local function drain(gate, slots)
  local later = false
  for _, e in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
    if not live(e) then redis.call('ZREM', slots, e) end
  end
  local ids = redis.call('ZRANGE', gate, 0, most - 1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    local id, due = ids[i], tonumber(ids[i + 1])
    redis.call('ZREM', gate, id)
    if due <= clock then
      redis.call('XADD', stream, '*', 'task', id)
    else
      redis.call('ZADD', delayed, ids[i + 1], id)
      later = true
    end
  end
  if later then wakeFetchers(wake) end
  if #ids / 2 == most then soonest(0) end -- more may move at once
  return #ids / 2
end

local keep = tonumber(ARGV[4])
local moved, a = 0, 5
for k = 5, #KEYS, 3 do
  local gate, slots, starts = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local conc, rate, per, flow, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3], tonumber(ARGV[a + 4])
  for i = 1, n do
    local id = ARGV[a + 3 + 2 * i]
    redis.call('ZADD', gate, 'NX', ARGV[a + 4 + 2 * i], id)
    redis.call('ZADD', starting, 'XX', ARGV[3], id)
  end
  a = a + 5 + 2 * n

  if conc == 0 and rate == 0 then
    moved = moved + drain(gate, slots)
  else
    local free, left, busy = most, nil, 0
    if conc > 0 then
      for _, e in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
        if live(e) then
          busy = busy + 1
        else
          redis.call('ZREM', slots, e)
        end
      end
      free = math.min(free, conc - busy)
    end
    local unstarted, held = 0, 0
    if rate > 0 then
      redis.call('ZREMRANGEBYSCORE', starts, '-inf', clock - per)
      unstarted = redis.call('ZCOUNT', starts, score(notStarted), '+inf')
      if unstarted > 0 then
        local last = lastDelivered()
        local upTo = score(notStarted + idTime(last))
        for _, e in ipairs(redis.call('ZRANGEBYSCORE', starts, score(notStarted), upTo)) do
          if not after(e, last) then
            redis.call('ZADD', starts, clock, e) -- leased unscored (above)
            unstarted = unstarted - 1
          end
        end
      end
      held = redis.call('ZCARD', starts)
      left = rate - held
      free = math.min(free, left)
    end
    local taken = 0
    if free > 0 then
      local due = redis.call('ZRANGEBYSCORE', gate, '-inf', clock, 'LIMIT', 0, free)
      for _, id in ipairs(due) do
        redis.call('ZREM', gate, id)
        local e
        if rate > 0 then
          e = redis.call('XADD', stream, '*', 'task', id, 'rate', flow)
          redis.call('ZADD', starts, score(notStarted + idTime(e)), e)
        else
          e = redis.call('XADD', stream, '*', 'task', id)
        end
        if conc > 0 then redis.call('ZADD', slots, clock, e) end
      end
      taken = #due
      moved = moved + taken
      unstarted = unstarted + taken
    end
    if conc > 0 and busy + taken > 0 then
      redis.call('PEXPIRE', slots, score(keep)) -- see the slots' expiry above
    end
    local first = redis.call('ZRANGE', gate, 0, 0, 'WITHSCORES')
    if #first > 0 then
      if tonumber(first[2]) > clock then
        soonest(tonumber(first[2]) - clock)
      end
      if taken == most then
        soonest(0) -- more may move at once
      end
      if left and left - taken <= 0 and held > unstarted - taken then
        local oldest = redis.call('ZRANGE', starts, 0, 0, 'WITHSCORES')
        soonest(tonumber(oldest[2]) + per - clock + 1)
      end
      -- Otherwise what is due waits for a slot, or for a start let through
      -- to be leased: a worker that frees one, or leases one, calls again.
    end
    if rate > 0 then
      local ttl = per
      if unstarted > 0 then ttl = math.max(per, keep) end
      redis.call('PEXPIRE', starts, score(ttl))
    end
  end
end
return {moved, wait}
