-- retire: deletes the consumers of the group that hold no pending entry:
-- the one named, and any other idle for longer than a bound (the
-- leftovers of workers that died). A consumer with pending entries is kept
-- whatever its name, since deleting it would drop those entries from the
-- group's pending list and lose their tasks.
--
-- KEYS[1] stream
-- ARGV[1] consumer group, ARGV[2] consumer retiring, ARGV[3] idle bound
--   (ms)
--
-- Returns the number of consumers deleted.
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then
  return 0
end
local deleted = 0
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do
    f[c[i]] = c[i + 1]
  end
  if tonumber(f['pending']) == 0 and (f['name'] == ARGV[2] or tonumber(f['idle']) > tonumber(ARGV[3])) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    deleted = deleted + 1
  end
end
return deleted
