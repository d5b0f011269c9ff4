-- Fragment: defines countNoRun(task, attempt), which counts on the task
-- hash task the lease of attempt as one that let the task go without
-- running its flow (field noruns, queue.Task.NoRuns, see
-- queue.Lease.NoRun) and records that attempt (field norunof), unless it
-- is the attempt counted last: a lease is counted once, however often
-- its worker says so. It returns 1 when it counted the lease, 0 when not.
-- The script that includes it has checked that the lease is still held,
-- or that the record's attempt is still the lease's, and that the hash
-- exists.
local function countNoRun(task, attempt)
  if redis.call('HGET', task, 'norunof') == attempt then
    return 0
  end
  redis.call('HINCRBY', task, 'noruns', 1)
  redis.call('HSET', task, 'norunof', attempt)
  return 1
end
