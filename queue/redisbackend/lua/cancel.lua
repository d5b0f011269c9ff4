-- cancel: marks a task cancelled and tells the workers.
--
-- KEYS[1] task hash
-- ARGV[1] the queue's cancel channel, ARGV[2] task id
--
-- Returns 0 when the task does not exist, 1 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'cancelled', '1')
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
