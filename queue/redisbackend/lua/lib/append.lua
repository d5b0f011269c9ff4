-- Fragment: defines retention (ARGV[1], in ms) and the function
-- append(task, stepsKey, events, channel, a), which records one call's
-- events, whose values start at ARGV[a], and returns its reply. The
-- values are those of appendValues (Go): the call's append key ("" for
-- none, see below), the number of events n, their
-- JSON as one string (see eventBatch), its tag (see elementTag in Go:
-- a hash of that string, which the ids of its events end with), the
-- state to set when the task is
-- PENDING and when it is not ("" for no change), "1" if the call starts a
-- run (it has a state event to PROGRESS) or "", the time of the call
-- (Unix ms, the caller's clock), the number of snapshot
-- field-value values k and those values, the number of step results s and
-- their JSON. Go folds the events into these (see foldEvents), so that
-- the script only stores them.
--
-- The script also records the times of the snapshot, the time of the
-- call: updated on every call, started when the call starts a run or
-- moves the task from PENDING to PROGRESS, ended when it moves the task
-- to SUCCESS or FAILURE. They are the caller's, not the server's clock,
-- because the caller writes the same time into the queue's task index
-- (see index.go in Go), which no script of a task can reach on a Redis
-- Cluster: a listing ordered by the index shows the times it is ordered
-- by.
--
-- The reply is a "NOTFOUND" error when the task does not exist and a
-- "FINISHED" error when it has reached SUCCESS or FAILURE (then nothing
-- is recorded); otherwise the id of the call's last event.
--
-- A call with an append key (progress.WithAppendKey in Go) records it in
-- the task hash's field akey, with the snapshot; one whose key is akey
-- already, a call sent again after its outcome was unknown, records
-- nothing and replies the id of the task's last event (the first call's,
-- unless calls without a key came since), and true as a second value.
-- It does so on a task that has ended too when the call ends the task
-- (the state it sets is SUCCESS or FAILURE): the first call ended it, and
-- nothing was recorded since; any other call to an ended task gets the
-- FINISHED error. The field is read by the HMGET and written by the HSET
-- that every call makes anyway, and lives in the task hash, on the task's
-- slot: a keyed call costs no command more. A call without a key leaves
-- akey as it is.
--
-- One element of the task's events list holds all the events of a call:
-- the n-th element's events have the ids "<n>-0-<tag>", "<n>-1-<tag>"...
-- in order, tag being the element's. So ids grow with every event, one
-- RPUSH records a whole call, and a reader finds the element of any id at
-- once (LRANGE from n-1). The tag tells the element from one that took
-- its place on another Redis, after a failover that lost it: a reader
-- computes it from the element it reads, and one whose id's tag is not
-- that element's reads from the first event (see readEvents in Go). It
-- costs no command and no byte in the list. A Redis stream,
-- whose entry ids carry a time, would cost more: Redis 7.0 gives a
-- stream's first node 4 KB at once, 4.8 KB per task in all, against a few
-- hundred bytes for a short list, and an XADD took 4 to 9 us per call
-- against about 1 for an RPUSH. The live message is the id of the event
-- before the call's, a space, the id of the call's last event, a line
-- break and the element (see subscribe.go). It goes out with SPUBLISH:
-- channel is a shard channel of the task's slot, so that Redis Cluster
-- routes it to the node of the task's keys.
--
-- The task hash's field ebytes is the bytes of the events list's
-- elements in all, written by the HSET that every call makes anyway: a
-- reader sizes its pages by it (see readEvents and Subscribe in Go). A
-- task recorded by an earlier version counts from its first call of this
-- one.
--
-- The three keys of a task share one expiry time, kept in the task hash's
-- field exp (Unix ms). An append that finds less than the retention left
-- moves it to nine eighths of the retention from the server's clock;
-- otherwise it only gives a key this call creates (the events list, the
-- steps list) the same time. So the keys live at least the retention
-- after the last write, and a task refreshes its expiry once per
-- sixteenth of the retention at most rather than three times per call.
-- What is left is judged by the time of the call (see lib/expiry.lua),
-- so an append that does not move exp sends no TIME.
local retention = tonumber(ARGV[1])
--@include lib/expiry.lua
local function append(task, stepsKey, events, channel, a)
  local cur = redis.call('HMGET', task, 'state', 'last', 'exp', 'akey', 'ebytes')
  local state = cur[1]
  if not state then
    return redis.error_reply('NOTFOUND task not found')
  end
  local prev = cur[2] or ''
  local key = ARGV[a]
  local ended = state == 'SUCCESS' or state == 'FAILURE'
  if key ~= '' and key == cur[4] then
    local ends = ARGV[a + 5] == 'SUCCESS' or ARGV[a + 5] == 'FAILURE'
    if ends or not ended then
      return prev, true
    end
  end
  if ended then
    return redis.error_reply('FINISHED task already finished')
  end
  a = a + 1
  local n = redis.call('RPUSH', events, ARGV[a + 1])
  local created = n == 1
  local size = #ARGV[a + 1]
  local last = string.format('%d-%d-%s', n, tonumber(ARGV[a]) - 1, ARGV[a + 2])
  redis.call('SPUBLISH', channel, prev .. ' ' .. last .. '\n' .. ARGV[a + 1])
  prev = last
  a = a + 3
  local was, to = state, ARGV[a + 1]
  if state == 'PENDING' then to = ARGV[a] end
  if to ~= '' then state = to end
  local now = ARGV[a + 3]
  local exp, refresh = expiry(cur[3], tonumber(now))
  exp = string.format('%d', exp)
  local k = tonumber(ARGV[a + 4])
  local ebytes = string.format('%d', (tonumber(cur[5]) or 0) + size)
  local set = {'state', state, 'last', prev, 'exp', exp, 'updated', now, 'ebytes', ebytes}
  if key ~= '' then
    set[#set + 1], set[#set + 2] = 'akey', key
  end
  if ARGV[a + 2] == '1' or (was == 'PENDING' and state == 'PROGRESS') then
    set[#set + 1], set[#set + 2] = 'started', now
  end
  if state == 'SUCCESS' or state == 'FAILURE' then
    set[#set + 1], set[#set + 2] = 'ended', now
  end
  for i = a + 5, a + 4 + k do
    set[#set + 1] = ARGV[i]
  end
  redis.call('HSET', task, unpack(set))
  a = a + 5 + k
  local s = tonumber(ARGV[a])
  local stepsCreated = false
  if s > 0 then
    stepsCreated = redis.call('RPUSH', stepsKey, unpack(ARGV, a + 1, a + s)) == s
  end
  if refresh then
    redis.call('PEXPIREAT', task, exp, 'GT')
  end
  if refresh or stepsCreated then
    redis.call('PEXPIREAT', stepsKey, exp)
  end
  if refresh or created then
    redis.call('PEXPIREAT', events, exp)
  end
  return prev
end
