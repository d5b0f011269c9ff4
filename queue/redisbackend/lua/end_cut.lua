#!lua
-- end_cut: ends a task whose start (or re-queue) was cut between its
-- record and the step that queues it (see starts.go in Go): it
-- records a FAILURE event, as append.lua does, if the task's hash is
-- still the one that start wrote (its field starting is ARGV[2]), the
-- task is PENDING, and no worker has leased it (it has no attempt).
--
-- KEYS[1] task hash, KEYS[2] steps list, KEYS[3] events list
-- ARGV[1] retention (ms), ARGV[2] the start's score in the starting set,
--   ARGV[3] the task's live channel, ARGV[4] the number m of values that
--   follow, and those values (see lib/append.lua; the first, the append
--   key, is "")
--
-- A task whose hash holds no progress (another store keeps it, which
-- this script cannot end) has its hash deleted instead, under the same
-- conditions: a retry with its idempotency key then finds no record, and
-- queues the task itself (see queue.Broker).
--
-- Returns {ended, rec, at}: ended is 1 when the task was ended, 2 when
-- it had ended as FAILURE already, never leased (a sweep ended it, whose
-- round trip was cut before the task's index entry, or it was cancelled:
-- the caller indexes it again), 3 when its hash, without progress, was
-- deleted (the caller takes it out of the index), 0 when it was left as
-- it is (gone, another start's, leased, or in another state); rec is the task's rec
-- field (false when it has none), which names its flow; at is when it
-- ended (its field ended, Unix ms), for 2, else 0.
--
-- The shebang makes a read-only replica refuse the script (see
-- append.lua): one that lacks the task would answer that it is gone, and
-- the start would be forgotten while its task waits on the primary.
--@include lib/append.lua
local cur = redis.call('HMGET', KEYS[1], 'rec', 'state', 'attempt', 'starting', 'ended')
if not cur[1] or (cur[3] and cur[3] ~= '0') or cur[4] ~= ARGV[2] then
  return {0, cur[1] or false, 0}
end
if not cur[2] then
  redis.call('DEL', KEYS[1])
  return {3, cur[1], 0}
end
if cur[2] == 'FAILURE' then
  return {2, cur[1], tonumber(cur[5]) or 0}
end
if cur[2] ~= 'PENDING' then
  return {0, cur[1], 0}
end
local r = append(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 5)
if type(r) == 'table' and r.err then
  return r
end
return {1, cur[1], 0}
