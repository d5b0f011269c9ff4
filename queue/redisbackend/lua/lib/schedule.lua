-- Fragment: defines schedule(stream, delayed, wake, id, due, now,
-- wakeWithin), which queues task id: at the end of stream when it is due
-- already (due <= now, Unix ms), in the delayed set otherwise; a task due
-- within wakeWithin ms also adds an entry to the wake stream, so that the
-- fetchers waiting on it look again in time.
local function schedule(stream, delayed, wake, id, due, now, wakeWithin)
  if due <= now then
    redis.call('XADD', stream, '*', 'task', id)
  else
    redis.call('ZADD', delayed, due, id)
    if due - now < wakeWithin then
      redis.call('XADD', wake, 'MAXLEN', '1', '*', 'w', '1')
    end
  end
end
