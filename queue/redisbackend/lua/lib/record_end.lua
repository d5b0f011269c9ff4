-- Fragment: defines recordEnd(task, attempt, why, handBack, noRun), which
-- records on the task hash task why the attempt of a lease ended (field
-- prev, a queue.AttemptEnd) and which attempt that was (field prevof,
-- the lease's attempt: while it is the record's attempt, no lease has
-- taken the task since) and, when handBack is "1", counts it as a
-- hand-back that is no attempt (field handbacks), when it is "hooks" as
-- a task given back for its finish hooks (field hookretries, for
-- queue.EndHooksPending), and when it is "" (an attempt that counts)
-- records why in field counted too (queue.Task.CountedEnd, which the
-- hand-backs after that attempt leave alone); and when noRun is "1",
-- counts the lease as one
-- that did not run the flow (see lib/count_no_run.lua). A hash that is
-- gone (the record expired) is
-- left gone. The script that includes it has checked that the lease is
-- still held: the end of a stale lease must not be told as the end of
-- the attempt before the current one.
--@include lib/count_no_run.lua
local function recordEnd(task, attempt, why, handBack, noRun)
  if redis.call('EXISTS', task) == 0 then
    return
  end
  if handBack == '' then
    redis.call('HSET', task, 'prev', why, 'prevof', attempt, 'counted', why)
  else
    redis.call('HSET', task, 'prev', why, 'prevof', attempt)
  end
  if handBack == '1' then
    redis.call('HINCRBY', task, 'handbacks', 1)
  elseif handBack == 'hooks' then
    redis.call('HINCRBY', task, 'hookretries', 1)
  end
  if noRun == '1' then
    countNoRun(task, attempt)
  end
end
