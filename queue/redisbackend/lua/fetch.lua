#!lua
-- fetch: leases up to max tasks to a consumer, atomically:
--
--  1. due delayed tasks (score <= the server's clock) move to the end of
--     the stream;
--  2. entries whose lease has passed (score <= the server's clock in the
--     leases set) are claimed for the consumer (XCLAIM), and the passed
--     lease's token removed (one ZREM for them all); entries deleted
--     meanwhile (or whose stream is gone) are forgotten; an entry whose
--     worker was found dead (see lib/reclaim.lua) ends its attempt as
--     "worker lost" (queue.EndWorkerLost), any other "lease expired";
--  3. new entries are read for the consumer (XREADGROUP), creating the
--     stream and group if they are missing;
--  4. each entry taken gets a lease number, and its token (lib/token.lua)
--     a deadline in the leases set (one ZADD for all the entries): the
--     number is the server's clock in ms, or for an entry taken over one
--     more than the number of the lease before if that is not below the
--     clock (below); an entry with the field "rate" (a task of a flow
--     with a rate, let through by admit.lua) has its start in the flow's
--     starts set (ARGV[11] and the field's value, the flow's name: a key
--     under the queue's hash tag, as the script's KEYS) scored with the
--     clock, if it was not scored yet (ZADD XX LT: an entry taken over
--     keeps the start of its first lease); a scoring that fails (on a
--     Cluster, the starts set was moved away as the queue's slot
--     migrates) leaves the start unscored, for admit.lua to score later
--     with its own clock ("leased unscored"), and the lease taken: the
--     script must not stop once XREADGROUP has delivered entries, which
--     would leave them pending with no token in the leases set;
--  5. unless ARGV[6] is empty, each entry's task record is read as the
--     lease step of Fetch would: its attempt incremented and, for an entry
--     taken over, its prev and counted fields set to why the attempt
--     before ended (below; an attempt taken over counts), unless the
--     record is gone; and its hash kept for at least
--     the retention. The task's
--     hash is named from its id, so this touches keys the script was not
--     given: only a client of a single Redis (not a Cluster, whose slots
--     would differ) asks for it.
--
-- A lease number is the second half of a lease token (see lease.go in
-- Go), by which a lease script finds the lease in the leases set: it must differ
-- from the number of every earlier lease of the same entry, or the worker
-- of an earlier one could act on the new one. An entry read anew has had
-- no lease; an entry taken over has had leases numbered at most the one
-- the token in the leases set holds (a lost one holds it too, see lib/lost.lua),
-- so one more than that, or the clock when it is higher, differs from all
-- of them. The clock rather than a counter costs no command, and keeps
-- numbers apart even after a failover to a replica that missed the last
-- leases (a counter there would hand out their numbers again).
--
-- The shebang (a script with flags, none of them allow-oom) makes a Redis
-- whose used memory is past its maxmemory refuse the script whole (OOM),
-- before it runs: without it, such a Redis would run it up to its first
-- write that may grow memory, and past it once XREADGROUP has written,
-- leasing tasks whose runs could record nothing (their reports, their
-- end) and that would be run again once their leases passed.
--
-- Steps 1 and 2 look at the first member of each sorted set, and go on
-- only when it is due: they cost a command each when nothing is due, and
-- those commands also tell when the next delayed task is due and the next
-- lease passes.
--
-- A quick look leaves steps 1 and 2 out: the caller asks for one with
-- ARGV[9], the time (Unix ms, the server's clock) until which an earlier
-- full look found that nothing is due, and gets one only while the
-- server's clock is before it by more than a quarter of ARGV[10]: a look
-- in the last quarter of that time is full, and starts the time anew, so
-- that a worker whose waits are ended by tasks arriving (a look each
-- quarter of a second or more often) has its full looks in those looks,
-- and none of its waits ends on that time alone, which costs Redis a
-- round trip of its own and the blocking read that follows (a full look
-- is never wrong: it is what a look without a plan does, a few commands
-- more). Its caller ends the wait that comes before it when
-- something may have become due sooner (an entry of the wake stream, see
-- Fetch in Go). A quick look leaves the wake stream's id to its caller,
-- and when it reads no entry, the stream's too: its lastID is then "+",
-- for the newest id the wait before it saw. Every entry up to that one
-- has been delivered (XREADGROUP found none left), so the next wait may
-- start after it; this spares the XREVRANGE that finds the newest id,
-- which every worker that a new task woke in vain would send (another
-- worker took the task).
--
-- KEYS[1] stream, KEYS[2] delayed set, KEYS[3] leases set, KEYS[4] wake
--   stream, KEYS[5] hooks set (the delayed tasks that wait to run their
--   finish hooks again, see retry.lua: a due task leaves it with the
--   delayed set)
-- ARGV[1] consumer group, ARGV[2] consumer, ARGV[3] max, ARGV[4] lease
--   (ms), ARGV[5] most delayed tasks to move, ARGV[6] the key prefix of
--   task hashes or "", ARGV[7] retention (ms), ARGV[8] "1" for the newest
--   id of the wake stream whenever the reply tells how to wait, "" for it
--   only when nothing was taken, ARGV[9] "" for a full look or the time
--   until which a quick one will do (above), ARGV[10] the longest time
--   (ms) until the next full look, ARGV[11] the key prefix of the flows'
--   starts sets (see admit.lua), ARGV[12...] the fields of a record to
--   read
--
-- Returns {taken, dueIn, expiresIn, lastID, lastWake, checkAt}. taken lists {entry
-- id, {field, value...}, token, ended, record} for each entry leased:
-- ended says why the attempt before ended when the entry was taken over
-- ("lease expired", queue.EndLeaseExpired in Go, or "worker lost",
-- queue.EndWorkerLost), "" for an entry read
-- anew; record is the values of the fields asked for (false for a missing
-- one, all false for a missing record), absent when ARGV[6] is empty or
-- the entry names no valid task id. ARGV[12...] must name rec, attempt,
-- prev and counted at places 1, 2, 5 and 10. When the script took every new entry there was
-- (it took fewer than max), the rest tells how to wait for more: dueIn is
-- the time in ms until the next delayed task is due and expiresIn until
-- the next lease passes (-1 when there is none), lastID is the id of the
-- newest entry of the stream ("0-0" if empty) and lastWake that of the
-- wake stream ("0-0" if empty; "" when tasks were taken and ARGV[8] is
-- empty), after which a blocking XREAD waits for new entries; and checkAt
-- is the time (Unix ms, the server's clock) until which a quick look will
-- do: the next due time or lease expiry that the look saw, at most
-- ARGV[10] from now, or for a quick look ARGV[9] (or the deadline of
-- the leases it gave, if sooner), whose dueIn is the time until it and
-- whose lastWake is "". Otherwise more may be
-- ready, and they are -1, -1, "", "" and "".
--@include lib/clock.lua
--@include lib/lost.lua
--@include lib/token.lua
local stream, delayed, leases = KEYS[1], KEYS[2], KEYS[3]
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
  redis.call('ZREM', KEYS[5], unpack(due))
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
  if #expired > 0 then redis.call('ZREM', leases, unpack(expired)) end
  for i = 1, #expired do
    local entry, holder = untoken(expired[i])
    local claimed = redis.pcall('XCLAIM', stream, group, consumer, 0, entry)
    if not claimed.err and #claimed > 0 then
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
  local deadlines = {}
  local deadline = string.format('%d', clock + leasems)
  for i = 1, #taken do
    local n = clock
    if before[i] and before[i] >= n then n = before[i] + 1 end
    local id, number = taken[i][1], string.format('%d', n)
    deadlines[2 * i - 1], deadlines[2 * i] = deadline, token(id, number)
    out[i] = {id, taken[i][2], number, ended[i] or ''}
    local fields = taken[i][2] -- "task" and its id first, then any others
    for f = 3, #fields - 1, 2 do
      if fields[f] == 'rate' then
        redis.pcall('ZADD', ARGV[11] .. fields[f + 1], 'XX', 'LT', clock, id)
      end
    end
  end
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
        local rec = redis.call('HMGET', key, 'exp', unpack(ARGV, 12))
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
if #out == 0 or ARGV[8] ~= '' then lastWake = newest(KEYS[4]) end
local checkIn = tonumber(ARGV[10])
if dueIn >= 0 and dueIn < checkIn then checkIn = dueIn end
if expiresIn >= 0 and expiresIn < checkIn then checkIn = expiresIn end
return {out, dueIn, expiresIn, lastID or newest(stream), lastWake, string.format('%d', clock + checkIn)}
