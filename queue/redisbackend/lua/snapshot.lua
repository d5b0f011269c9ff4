#!lua flags=no-writes
-- snapshot: reads a task's snapshot fields and its steps at once, as the
-- MULTI/EXEC of Snapshot in Go does, for a Redis that refused that
-- transaction because its used memory is past its maxmemory: such a
-- Redis refuses every command queued in a MULTI, reads too, but runs a
-- script that says no-writes.
--
-- KEYS[1] task hash, KEYS[2] steps list
-- ARGV the fields of the task hash to read
--
-- Returns {the values of the fields (false for a missing one), the steps}.
return {redis.call('HMGET', KEYS[1], unpack(ARGV)), redis.call('LRANGE', KEYS[2], 0, -1)}
