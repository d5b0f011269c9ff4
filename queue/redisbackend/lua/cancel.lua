-- cancel: marks a task cancelled. The workers are told by an SPUBLISH on
-- the queue's cancel channel sent with it (a channel of the queue's slot,
-- which a script on the task's slot cannot reach on a Redis Cluster).
--
-- KEYS[1] task hash
-- ARGV none
--
-- Returns 0 when the task does not exist, 1 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'cancelled', '1')
return 1
