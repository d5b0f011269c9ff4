-- Fragment: a lease is one member of the leases set, scored by its
-- deadline: token(entry, holder), "<stream entry id>/<holder>", where
-- holder is the lease's number (its token in Go is the same string, see
-- lease.go) or, for a lease whose worker was found dead, lostHolder of it
-- (see lib/lost.lua). A lease script finds its lease by the exact member
-- (ZREM, ZSCORE: O(log n)); a stale token matches no member.
-- untoken(member) returns the entry id and the holder of a member.
local function token(entry, holder)
  return entry .. '/' .. holder
end
local function untoken(member)
  local entry, holder = string.match(member, '^([^/]*)/(.*)$')
  if not entry then return member, nil end
  return entry, holder
end
