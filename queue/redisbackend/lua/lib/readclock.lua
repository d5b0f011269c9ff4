-- Fragment: defines readClock(), the Redis server's clock in Unix ms, and
-- clock, which holds it once read: TIME is sent on the first call only.
-- A script that needs the clock on some of its paths only (a caller over
-- its limits, a task's keys due for a longer life) calls readClock()
-- there, and its other paths send no TIME; lib/clock.lua reads it at
-- once, for the scripts that always need it.
local clock
local function readClock()
  if not clock then
    local time = redis.call('TIME')
    clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return clock
end
