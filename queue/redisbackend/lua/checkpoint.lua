-- checkpoint: records one checkpoint of a task (the output of a step it
-- completed, see checkpoint.go), replacing one with the same key.
--
-- KEYS[1] task hash, KEYS[2] steps list, KEYS[3] events list, KEYS[4] the
-- task's checkpoints hash
-- ARGV[1] retention (ms), ARGV[2] the checkpoint's key, ARGV[3] its value
-- (the attempt, a space and the output's JSON)
--
-- Returns 1, or a NOTFOUND error when the task does not exist and a
-- FINISHED error when it has reached SUCCESS or FAILURE: nothing is
-- recorded then, so that the late step of an abandoned run cannot write
-- to a task that has ended.
--
-- A checkpoint is a write to the task, as an Append is: when the shared
-- expiry time of the task's progress keys (field exp, see
-- lib/append.lua) leaves less than the retention, it moves, for the task
-- hash, the steps and the events as an Append would move it. The
-- checkpoints hash gets that time too, but a later Append that moves it
-- does not move this key: checkpoints live at least the retention after
-- they were saved, and never longer than their task, so a task created
-- again under the same id finds none.
--@include lib/clock.lua
local retention = tonumber(ARGV[1])
--@include lib/expiry.lua
local cur = redis.call('HMGET', KEYS[1], 'state', 'exp')
local state = cur[1]
if not state then
  return redis.error_reply('NOTFOUND task not found')
end
if state == 'SUCCESS' or state == 'FAILURE' then
  return redis.error_reply('FINISHED task already finished')
end
local exp, refresh = expiry(cur[2])
exp = string.format('%d', exp)
if refresh then
  redis.call('HSET', KEYS[1], 'exp', exp)
  redis.call('PEXPIREAT', KEYS[1], exp, 'GT')
  redis.call('PEXPIREAT', KEYS[2], exp)
  redis.call('PEXPIREAT', KEYS[3], exp)
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('PEXPIREAT', KEYS[4], exp)
return 1
