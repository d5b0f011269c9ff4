-- enqueue: writes a task's queue record and queues it, in one step, for
-- Backend.Enqueue (see task.go in Go): the record's fields in the task's
-- hash (a progress snapshot there, written by Create, is left as it is),
-- the hash's expiry, its entry in the task index (see lib/index.lua) and
-- its queue entry (see lib/schedule.lua). A process that dies, or a
-- connection that breaks, leaves all of it or nothing: never a record
-- whose task is not queued, which a retry with the task's idempotency
-- key would take for a task queued.
--
-- KEYS[1] task hash
-- ARGV[1] the stream, ARGV[2] the delayed set, ARGV[3] the wake stream,
--   ARGV[4] now (Unix ms, the caller's clock), ARGV[5] longest wait of a
--   fetcher (ms), ARGV[6] the time to live of the hash (ms), ARGV[7] the
--   task's id, ARGV[8] "1" to queue it, "" not to (a task of a limited
--   flow, which goes to its flow's gate next, see admit.lua; or, on a
--   Redis Cluster client, where the queue's keys are on another slot, a
--   task the caller queues itself), ARGV[9] its due time (Unix ms, 0 for
--   now), ARGV[10] its index score (PENDING since it was accepted) and
--   ARGV[11] its flow's name (see index_add), ARGV[12] the number k of
--   record values, and k values: the record's fields and values; from
--   ARGV[13 + k] the index values of lib/index.lua (the queue's index
--   key, "" on a Cluster client, which indexes the task itself, the flows
--   set, the number of flows to name f and f names).
--
-- The hash lives at least ARGV[6] from now: its expiry is set if it has
-- none (a hash the record creates), and moved later if it is earlier
-- (never earlier: a snapshot may have given it longer).
--
-- Returns 1.
--@include lib/schedule.lua
--@include lib/index.lua
local task, ttl, id = KEYS[1], ARGV[6], ARGV[7]
local k = tonumber(ARGV[12])
redis.call('HSET', task, unpack(ARGV, 13, 12 + k))
if redis.call('PEXPIRE', task, ttl, 'NX') == 0 then
  redis.call('PEXPIRE', task, ttl, 'GT')
end
index_init(13 + k)
index_add(ARGV[10], ARGV[11], id)
index_write()
if ARGV[8] ~= '' then
  schedule(ARGV[1], ARGV[2], ARGV[3], id, tonumber(ARGV[9]), tonumber(ARGV[4]), tonumber(ARGV[5]))
end
return 1
