-- Fragment: defines prune(dead, buried, cutoff), which removes up to 100
-- entries buried before cutoff (Unix ms) from the dead set and the buried
-- hash.
local function prune(dead, buried, cutoff)
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', '(' .. cutoff, 'LIMIT', 0, 100)
  for i = 1, #old do
    redis.call('ZREM', dead, old[i])
    redis.call('HDEL', buried, old[i])
  end
end
