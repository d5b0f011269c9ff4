-- ready: moves a task from the delayed set to the end of the stream, if it
-- is in the delayed set.
--
-- KEYS[1] delayed set, KEYS[2] stream
-- ARGV[1] task id
--
-- Returns 1 if the task was moved, 0 otherwise.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'task', ARGV[1])
  return 1
end
return 0
