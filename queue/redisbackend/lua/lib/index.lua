-- Fragment: defines index_init(a), index_add(score, flow, id) and
-- index_write(), with which a script that changes tasks writes their
-- states into the queue's task index itself (see index.go in Go), on a
-- single Redis: a task and its index entry then change in one step, and
-- no process that dies between two commands leaves one without the
-- other. (On a Redis Cluster the index is on the queue's slot, not the
-- task's: the caller passes "" for the index and writes it after the
-- script.)
--
-- index_init reads the values that start at ARGV[a]: the queue's index
-- key ("" to write nothing), the flows set, the number f of flows to name
-- and their f names (those the caller found due, see renameEvery in Go);
-- it returns the position after them. index_add notes that task id has
-- score (rank and time, as indexScore in Go makes it; "" for nothing to
-- write) in the queue's index and, unless flow is "", in flow's index
-- (the queue's index key, ':' and the flow's name). index_write writes
-- what was noted, one ZADD GT per key, as Go's indexCommands sends them,
-- then adds to the flows set the flows to name that have a task noted,
-- after their ZADDs (a flow is named once it has a member).
local indexKey, flowsKey, indexNames = '', '', {}
local indexKeys, indexMembers, indexFlows = {}, {}, {}
local function index_init(a)
  indexKey, flowsKey = ARGV[a], ARGV[a + 1]
  local f = tonumber(ARGV[a + 2])
  for i = a + 3, a + 2 + f do indexNames[#indexNames + 1] = ARGV[i] end
  return a + 3 + f
end
local function index_note(key, score, id)
  local members = indexMembers[key]
  if not members then
    members = {}
    indexMembers[key] = members
    indexKeys[#indexKeys + 1] = key
  end
  members[#members + 1] = score
  members[#members + 1] = id
end
local function index_add(score, flow, id)
  if indexKey == '' or score == '' then return end
  index_note(indexKey, score, id)
  if flow ~= '' then
    index_note(indexKey .. ':' .. flow, score, id)
    indexFlows[flow] = true
  end
end
local function index_write()
  for _, key in ipairs(indexKeys) do
    redis.call('ZADD', key, 'GT', unpack(indexMembers[key]))
  end
  local named = {}
  for _, flow in ipairs(indexNames) do
    if indexFlows[flow] then named[#named + 1] = flow end
  end
  if #named > 0 then
    redis.call('SADD', flowsKey, unpack(named))
  end
end
