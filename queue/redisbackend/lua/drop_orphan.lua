#!lua
-- drop_orphan: deletes what a Cluster client's lease left of a missing
-- task record: the task's hash, which the lease's HINCRBY of the attempt
-- (and HSET of prev and counted) made anew, unless it holds a progress
-- snapshot (a state field: the hash is the store's) or, when the lease
-- read no record, a record. The lease read the hash in an earlier round
-- trip: a snapshot or a record written to it since is kept.
--
-- KEYS[1] task hash
-- ARGV[1] "1" when the lease read no record (field rec), "" when it read
--   one it could not decode
--
-- Returns 1 when it deleted the hash, 0 when it kept it (or found none).
--
-- The shebang makes a read-only replica refuse the script (see script.go).
if redis.call('HEXISTS', KEYS[1], 'state') == 1 then
  return 0
end
if ARGV[1] == '1' and redis.call('HEXISTS', KEYS[1], 'rec') == 1 then
  return 0
end
return redis.call('DEL', KEYS[1])
