-- Fragment: defines clock, the Redis server's clock in Unix ms, which the
-- scripts that set expiry times and lease deadlines go by, read at once
-- (see lib/readclock.lua).
--@include lib/readclock.lua
readClock()
