-- Fragment: defines admit_caller, the check of one start against the
-- limits of its caller (queue.CallerLimits), which counts the start when
-- it passes. A caller's two keys share one hash tag, of the caller's
-- hash; the fragment needs the server's clock (lib/clock.lua) from its
-- script.
--
-- admit_caller(rate, pending, starts, per, maxPending, id, keep):
--   rate: the caller's rate key: a string, the theoretical arrival time
--     of its next start (Unix ms, a decimal), expiring when it is past;
--   pending: the caller's waiting tasks, a sorted set of task ids scored
--     by the time (Unix ms) they were admitted, kept keep ms after the
--     last admission (the Go side prunes the tasks that no longer wait);
--   starts, per (ms): the rate, starts per per, 0 for none (a generic
--     cell rate: a burst of starts, then one every per/starts);
--   maxPending: the cap on waiting tasks, 0 for none; an id already
--     among them (the repeat of an idempotent start) is not counted
--     twice.
-- Returns nil when the start passes, having counted it, or an error
-- reply: "LIMIT starts <ms to wait>" or "LIMIT pending", having counted
-- nothing.
local function admit_caller(rate, pending, starts, per, maxPending, id, keep)
  local again = false
  if maxPending > 0 then
    again = redis.call('ZSCORE', pending, id) ~= false
    if not again and redis.call('ZCARD', pending) >= maxPending then
      return redis.error_reply('LIMIT pending')
    end
  end
  if starts > 0 then
    local tat = tonumber(redis.call('GET', rate) or '0')
    if tat < clock then
      tat = clock
    end
    tat = tat + per / starts
    local wait = tat - clock - per
    if wait > 0 then
      return redis.error_reply(string.format('LIMIT starts %d', math.ceil(wait)))
    end
    redis.call('SET', rate, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - clock)))
  end
  if maxPending > 0 and not again then
    redis.call('ZADD', pending, clock, id)
    redis.call('PEXPIRE', pending, keep)
  end
  return nil
end
