-- Fragment: defines schedule(stream, delayed, wake, id, due, now,
-- wakeWithin, gate), which queues task id: at the end of stream when it is
-- due already (due <= now, Unix ms), in the delayed set otherwise; a task
-- due within wakeWithin ms also adds an entry to the wake stream, so that
-- the fetchers waiting on it look again in time. With gate (the gate set
-- of a limited flow, see admit.lua), the task waits in it for a slot
-- instead, scored by its due time.
--@include lib/wake.lua
local function schedule(stream, delayed, wake, id, due, now, wakeWithin, gate)
  if gate then
    redis.call('ZADD', gate, due, id)
    return
  end
  if due <= now then
    redis.call('XADD', stream, '*', 'task', id)
  else
    redis.call('ZADD', delayed, due, id)
    if due - now < wakeWithin then
      wakeFetchers(wake)
    end
  end
end
