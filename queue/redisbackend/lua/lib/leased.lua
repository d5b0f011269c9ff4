-- Fragment: defines leasedEntries(leases), which reads the whole leases
-- set (one ZRANGE, whose cost grows with the leases held) and returns a
-- table from the entry id of each member (lib/token.lua) to the member.
--@include lib/token.lua
local function leasedEntries(leases)
  local held = {}
  for _, member in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    local entry = untoken(member)
    held[entry] = member
  end
  return held
end
