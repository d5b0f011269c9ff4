-- Fragment: opens every script that ends one lease (retry, bury). It
-- removes the lease's token, stream entry ARGV[1] and number ARGV[2], from
-- the leases set KEYS[2] (see lib/token.lua), and returns 0 (the lease is
-- no longer held) when it was not there: one command checks the holder
-- and ends the lease.
--@include lib/token.lua
if redis.call('ZREM', KEYS[2], token(ARGV[1], ARGV[2])) == 0 then
  return 0
end
