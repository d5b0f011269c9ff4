-- heartbeat: records a worker's heartbeat in the queue's worker registry,
-- stamped with the server's clock, and takes back the leases of the
-- workers found dead (see lib/reclaim.lua), after moving the lapsed
-- leases of the layout before 2026-12-07 into the leases set (see
-- lib/legacy.lua: one command when there is none). A sweep (ARGV[6] set)
-- also takes back the entries pending with no lease, whatever their
-- worker's state (see lib/stray.lua).
--
-- A worker judges others only once it has been in contact for as long as
-- it may itself go without a heartbeat (ARGV[3], its window): the contact
-- set holds since when its heartbeats have come without a gap, from its
-- first one, or from the first after a gap of more than half its window
-- (with three intervals to a window, one of its heartbeats did not get
-- through). One that was cut off itself (a Redis restart, a network
-- split, a pause) would otherwise find dead the workers that have not
-- beaten again yet, even those whose heartbeats come back an interval
-- after its own; waiting gives each of them a whole window after the
-- outage to beat again. A worker that never beat, or that retired, is
-- not in the deadlines set: its leases wait out their deadline.
--
-- KEYS[1] workers hash, KEYS[2] last-seen set, KEYS[3] deadlines set,
--   KEYS[4] stream, KEYS[5] leases set, KEYS[6] wake stream, KEYS[7]
--   contact set, KEYS[8] and KEYS[9] the leases set and holders hash of
--   the layout before (see lib/legacy.lua), KEYS[10] the swept key (see
--   lib/stray.lua)
-- ARGV[1] worker name, ARGV[2] what the worker says of itself (JSON),
--   ARGV[3] how long it may go without a heartbeat (ms), ARGV[4] consumer
--   group, ARGV[5] most entries to take back per dead worker, and to move
--   from the layout before, ARGV[6] "" or, for a sweep (see
--   lib/stray.lua), the worker's lease (ms): how long an entry must have
--   been pending with no lease to be taken back, up to ARGV[5] of them;
--   ARGV[7] how long (ms) no other sweep repeats this one
--
-- Returns {the server's clock (Unix ms), the number of entries taken
-- back}, and a third element, the error, when the sweep failed: a
-- command of it refused (a key of the wrong type) stops the sweep, not
-- the heartbeat, whose writes come before it.
--@include lib/clock.lua
--@include lib/reclaim.lua
--@include lib/legacy.lua
--@include lib/stray.lua
local window = tonumber(ARGV[3])
local last = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
local since
if last and clock - last <= window / 2 then
  since = tonumber(redis.call('ZSCORE', KEYS[7], ARGV[1]))
end
if not since then
  since = clock
  redis.call('ZADD', KEYS[7], clock, ARGV[1])
end
redis.call('ZADD', KEYS[2], clock, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], clock + window, ARGV[1])
adoptLapsed(KEYS[8], KEYS[9], KEYS[5], KEYS[6], tonumber(ARGV[5]))
local marked = 0
if clock - since >= window then
  marked = reclaim(KEYS[3], KEYS[7], KEYS[4], KEYS[5], KEYS[6], ARGV[4], tonumber(ARGV[5]), KEYS[8], KEYS[9])
end
if ARGV[6] ~= '' then
  local ok, n = pcall(takeStrays, KEYS[4], KEYS[5], KEYS[6], ARGV[4], ARGV[6], tonumber(ARGV[5]), KEYS[8], KEYS[10], ARGV[7])
  if not ok then
    if type(n) == 'table' then n = n.err end
    return {clock, marked, tostring(n)}
  end
  marked = marked + n
end
return {clock, marked}
