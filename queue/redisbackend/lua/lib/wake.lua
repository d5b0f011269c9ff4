-- Fragment: defines wakeFetchers(wake), which adds an entry to the
-- queue's wake stream wake (one XADD, keeping the stream at its last
-- entry: MAXLEN 1), so that every fetcher waiting on it (its XREAD, see
-- fetch.go) looks again at once. It is the script's side of wakeCommand
-- (task.go): the same command, field and value.
local function wakeFetchers(wake)
  redis.call('XADD', wake, 'MAXLEN', '1', '*', 'w', '1')
end
