-- cancel: marks a task cancelled. The workers are told by an SPUBLISH on
-- the queue's cancel channel sent with it (a channel of the queue's slot,
-- which a script on the task's slot cannot reach on a Redis Cluster).
--
-- KEYS[1] task hash
-- ARGV none
--
-- Returns 0 when the task does not exist, otherwise {1, rec}: the task's
-- rec field (false when it has none), which names its flow.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'cancelled', '1')
return {1, redis.call('HGET', KEYS[1], 'rec')}
