-- ready: moves a task from the delayed set, or from the gate of its
-- limited flow, to the end of the stream, if it is in one of them. A
-- task in the hooks set stays where it is: it has ended, and waits for
-- its time to run its finish hooks again (see retry.lua), cancelled or
-- not.
--
-- KEYS[1] delayed set, KEYS[2] stream, KEYS[3] hooks set, KEYS[4] (a task
--   of a limited flow only) its flow's gate set (see admit.lua): a
--   cancelled task does not wait for a slot, its worker ends it without
--   running it
-- ARGV[1] task id
--
-- Returns 1 if the task was moved, 0 otherwise.
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  return 0
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
  return 1
end
if KEYS[4] and redis.call('ZREM', KEYS[4], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
  return 1
end
return 0
