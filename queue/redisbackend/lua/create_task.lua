-- create_task: records new tasks' progress as PENDING with no events, as
-- create.lua does, together with their queue records, and queues them: at
-- the end of the stream when they are due, in the delayed set otherwise
-- (see lib/schedule.lua).
--
-- KEYS, per task: task hash
-- ARGV[1] initial state, ARGV[2] initial status, ARGV[3] the stream,
--   ARGV[4] the delayed set, ARGV[5] the wake stream, ARGV[6] now (Unix
--   ms), ARGV[7] longest wait of a fetcher (ms), from ARGV[8] the index
--   values of lib/index.lua (the queue's index key, "" on a Cluster
--   client, the flows set, the number of flows to name f and f names),
--   then, for each task: the time to live of its hash (ms), its id, "1"
--   if the id may be taken (the script then checks it) or "" for one
--   drawn for this task, which no other can have, "1"
--   if the script is to queue it or "", its due time (Unix ms), its index score
--   (PENDING since it was accepted) and its flow's name (see index_add),
--   the number of record values k, and k
--   values: the record's fields and values, then the number of caller
--   limit values n (0 or 7), and n values: the caller's rate key and
--   pending set, starts, per (ms), max pending, how long to keep the
--   pending set (ms) and the task's id, as admit_caller takes them (see
--   lib/caller_limits.lua)
--
-- Returns, for each task, 1, or an "EXISTS" error when its id is one to
-- check and it has a snapshot, or the "LIMIT" error of admit_caller when its caller is over a limit
-- (then nothing of that task is written, in the task index neither). A
-- task recorded is written into the task index in the same step, on a
-- single Redis (see lib/index.lua). The caller's keys are on another
-- Cluster slot than the task's, so a Cluster client passes no caller
-- limits and checks them first (caller_admit.lua). A record without a
-- snapshot (left by Enqueue under the same id) is replaced, if the id is
-- one to check. An id not to check (a Broker's own, queue.NewID: 128
-- random bits) costs no EXISTS: its hash is taken to be missing, and is
-- written as if it were. The queue's keys are on
-- another Cluster slot than a task's, so they are given in ARGV: a Cluster
-- client passes "" for queueing and for the index, and queues the task and
-- indexes it itself.
--
-- A task's keys expire at ARGV[6] plus their time to live: the caller's
-- clock, not the server's, which costs a TIME per script. The time to
-- live is nine eighths of the retention (plus any delay, see Go's
-- keepMS), so a caller's clock behind the server's by less than an eighth
-- of the retention still keeps them the retention. Only a caller with
-- limits reads the server's clock, which they go by.
--@include lib/readclock.lua
--@include lib/schedule.lua
--@include lib/caller_limits.lua
--@include lib/index.lua
local now, wakeWithin = tonumber(ARGV[6]), tonumber(ARGV[7])
local out = {}
local a = index_init(8)
for t = 1, #KEYS do
  local task = KEYS[t]
  local ttl, id, check, queued = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local due, k = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 7])
  local l = a + 8 + k
  local n = tonumber(ARGV[l])
  local found = check ~= '' and redis.call('EXISTS', task) == 1
  local refused = nil
  if found and redis.call('HEXISTS', task, 'state') == 1 then
    refused = redis.error_reply('EXISTS task already exists')
  elseif n > 0 then
    readClock()
    refused = admit_caller(ARGV[l + 1], ARGV[l + 2], tonumber(ARGV[l + 3]), tonumber(ARGV[l + 4]),
      tonumber(ARGV[l + 5]), ARGV[l + 7], ARGV[l + 6])
  end
  if refused then
    out[t] = refused
  else
    if found then
      redis.call('DEL', task)
    end
    local exp = string.format('%d', now + tonumber(ttl))
    redis.call('HSET', task, 'state', ARGV[1], 'status', ARGV[2], 'progress', '0', 'last', '', 'exp', exp, unpack(ARGV, a + 8, a + 7 + k))
    redis.call('PEXPIREAT', task, exp)
    if queued ~= '' then
      schedule(ARGV[3], ARGV[4], ARGV[5], id, due, now, wakeWithin)
    end
    index_add(ARGV[a + 5], ARGV[a + 6], id)
    out[t] = 1
  end
  a = l + 1 + n
end
index_write()
return out
