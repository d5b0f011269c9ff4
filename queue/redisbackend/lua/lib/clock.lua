-- Fragment: defines clock, the Redis server's clock in Unix ms, which the
-- scripts that set expiry times and lease deadlines go by.
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
