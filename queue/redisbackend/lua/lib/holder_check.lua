-- Fragment: opens every script that acts on one lease. It returns 0 (the
-- lease is no longer held) unless the holders hash KEYS[3] records token
-- ARGV[2] for stream entry ARGV[1].
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
