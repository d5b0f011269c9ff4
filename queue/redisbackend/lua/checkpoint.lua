#!lua
-- checkpoint: records checkpoints of tasks (the outputs of steps they
-- completed, see checkpoint.go), each replacing one with the same key of
-- its task; the calls of several tasks go together when SaveCheckpoint
-- calls are batched.
--
-- KEYS, per call: task hash, steps list, events list, the task's
-- checkpoints hash
-- ARGV[1] retention (ms), ARGV[2] number of calls, then, for each call:
--   the checkpoint's key and its value (the attempt, a space and the
--   output's JSON)
--
-- Returns one reply per call: 1, or a NOTFOUND error when the task does
-- not exist and a FINISHED error when it has reached SUCCESS or FAILURE:
-- nothing is recorded for that call then, so that the late step of an
-- abandoned run cannot write to a task that has ended.
--
-- A checkpoint is a write to the task, as an Append is: when the shared
-- expiry time of the task's progress keys (field exp, see
-- lib/append.lua) leaves less than the retention, it moves, for the task
-- hash, the steps and the events as an Append would move it. The
-- checkpoints hash gets that time too, but a later Append that moves it
-- does not move this key: checkpoints live at least the retention after
-- they were saved, and never longer than their task, so a task created
-- again under the same id finds none.
--
-- The shebang makes a read-only replica refuse the script (see script.go).
--@include lib/clock.lua
local retention = tonumber(ARGV[1])
--@include lib/expiry.lua
local function save(task, steps, events, checkpoints, key, value)
  local cur = redis.call('HMGET', task, 'state', 'exp')
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
    redis.call('HSET', task, 'exp', exp)
    redis.call('PEXPIREAT', task, exp, 'GT')
    redis.call('PEXPIREAT', steps, exp)
    redis.call('PEXPIREAT', events, exp)
  end
  redis.call('HSET', checkpoints, key, value)
  redis.call('PEXPIREAT', checkpoints, exp)
  return 1
end
local out = {}
for c = 0, tonumber(ARGV[2]) - 1 do
  out[c + 1] = save(KEYS[4 * c + 1], KEYS[4 * c + 2], KEYS[4 * c + 3], KEYS[4 * c + 4], ARGV[2 * c + 3], ARGV[2 * c + 4])
end
return out
